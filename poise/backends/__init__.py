"""The engines that train and score a candidate, behind one contract (`base.Backend`):

    tiny   the embedded sandbox (`tiny.py`): a 0.6M-parameter model on tiny-math, CPU, minutes
    trl    any Hugging Face causal LM trained with TRL's GRPOTrainer (`trl/`), extra `[trl]`
    verl   the user's verl recipe with the candidate's plugin (`verl/`), GPUs, extras `[verl,trl]`

`get_backend(spec)` builds one; `read_config(path)` reads a backend config file (TOML)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from poise.backends.base import BACKENDS, Backend, BackendError, BackendSpec, EvalResult, Tier


def get_backend(spec: BackendSpec) -> Backend:
    if spec.name == "tiny":
        from poise.backends.tiny import TinyBackend

        return TinyBackend(spec)
    if spec.name == "trl":
        from poise.backends.trl import TrlBackend

        return TrlBackend(spec)
    if spec.name == "verl":
        from poise.backends.verl import VerlBackend

        return VerlBackend(spec)
    raise BackendError(f"unknown backend {spec.name!r}; choose one of {', '.join(BACKENDS)}")


def read_config(path: Path | None, flag: str = "--backend-config") -> dict:
    """A backend config file (TOML) as a dict; {} without one (the backend's defaults)."""
    if path is None:
        return {}
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BackendError(f"{flag} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BackendError(f"{flag} {path}: cannot read it ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise BackendError(f"{flag} {path} is not valid TOML: {e}") from None


def make_spec(name: str, fidelity: str, config_path: Path | None, flag: str = "--backend",
              gpus_elsewhere: bool = False) -> BackendSpec:
    """The spec the command line asks for, checked: an unknown backend, a config file for `tiny`, a config
    the backend rejects, or verl on a machine without a GPU fail here, before anything runs. ``flag`` names
    the option in messages (--backend, or --promote for the cascade); ``gpus_elsewhere``: evaluations run on
    other machines (a Ray cluster), so this one needs no GPU."""
    if name not in BACKENDS:
        raise BackendError(f"unknown {flag} {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "tiny":
        if config_path is not None:
            raise BackendError(f"{flag}-config is for {flag} trl or verl; the tiny sandbox is sized with --fidelity")
        spec = BackendSpec("tiny", fidelity)
    else:
        spec = BackendSpec(name, fidelity, read_config(config_path, f"{flag}-config"))
    get_backend(spec)  # validates the settings
    if name == "verl" and not gpus_elsewhere:
        from poise.backends.verl import VerlBackend

        VerlBackend.check_gpu()
    return spec


__all__ = ["BACKENDS", "Backend", "BackendError", "BackendSpec", "EvalResult", "Tier", "get_backend", "make_spec",
           "read_config"]
