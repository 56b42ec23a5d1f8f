"""The algorithm space: the interface (``base``) and the built-in library, one small file each.

``load_algorithm("grpo")`` returns a built-in; ``load_algorithm("path/to/file.py")`` loads a candidate
file. Loading a file executes it, so only do that inside a worker process (``poise.backends``).
"""

from __future__ import annotations

import ast
import importlib.resources
import inspect
import types
from pathlib import Path

from poise.algorithms.base import AlgoConfig, Algorithm, RolloutBatch, default_policy_loss

# The registry of built-ins, in the order they are listed. Each name is a module in this package.
BUILTINS: tuple[str, ...] = ("grpo", "dr_grpo", "rloo", "dapo", "av_grpo", "vm_av_grpo", "dace_grpo")

REQUIRED = {"compute_advantages": ("batch", "cfg")}
OPTIONAL = {"compute_policy_loss": ("logp", "batch", "advantages", "cfg"), "shape_rewards": ("batch", "cfg")}


class AlgorithmError(Exception):
    """A candidate algorithm could not be loaded or misbehaved. The message names the problem and the fix."""


def builtin_source(name: str) -> str:
    if name not in BUILTINS:
        raise AlgorithmError(f"unknown algorithm {name!r}: built-ins are {', '.join(BUILTINS)}; "
                             f"or pass the path of a .py file that defines compute_advantages(batch, cfg)")
    return importlib.resources.files("poise.algorithms").joinpath(f"{name}.py").read_text()


def _check_signature(fn, name: str, params: tuple[str, ...], origin: str) -> None:
    if not callable(fn):
        raise AlgorithmError(f"{origin}: `{name}` must be a function, got {type(fn).__name__}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    ps = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    has_var = any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())
    required = [p for p in ps if p.default is p.empty]
    if len(required) > len(params) or (len(ps) < len(params) and not has_var):
        want = ", ".join(params)
        got = ", ".join(sig.parameters)
        raise AlgorithmError(f"{origin}: `{name}({got})` has the wrong signature; it must be `{name}({want})`")


def algorithm_from_source(source: str, name: str, origin: str) -> Algorithm:
    """Compile and execute candidate source, then check it defines the interface. Raises AlgorithmError."""
    try:
        code = compile(source, origin, "exec")
    except SyntaxError as e:
        raise AlgorithmError(f"{origin}: syntax error at line {e.lineno}: {e.msg}"
                             + (f"\n    {e.text.rstrip()}" if e.text else "")) from None
    module = types.ModuleType(f"poise_candidate_{name}")
    module.__file__ = origin
    try:
        exec(code, module.__dict__)
    except Exception as e:  # the candidate's own top-level code failed
        raise AlgorithmError(f"{origin}: failed while loading: {type(e).__name__}: {e}") from None
    ns = module.__dict__
    if "compute_advantages" not in ns:
        raise AlgorithmError(f"{origin}: no `compute_advantages(batch, cfg)` function defined; every algorithm "
                             f"must define it and return token-level advantages of shape [N, T] (or [N])")
    for fn_name, params in {**REQUIRED, **OPTIONAL}.items():
        if fn_name in ns:
            _check_signature(ns[fn_name], fn_name, params, origin)
    raw_cfg = ns.get("CONFIG", {})
    if not isinstance(raw_cfg, dict):
        raise AlgorithmError(f"{origin}: CONFIG must be a dict of AlgoConfig overrides, got {type(raw_cfg).__name__}")
    try:
        cfg = AlgoConfig.from_dict(raw_cfg)
    except (TypeError, ValueError) as e:
        raise AlgorithmError(f"{origin}: bad CONFIG: {e}") from None
    doc = (ns.get("__doc__") or "").strip()
    return Algorithm(
        name=name,
        compute_advantages=ns["compute_advantages"],
        compute_policy_loss=ns.get("compute_policy_loss", default_policy_loss),
        shape_rewards=ns.get("shape_rewards"),
        config=cfg,
        source=source,
        origin=origin,
        summary=doc.splitlines()[0] if doc else "",
    )


def load_algorithm(spec: str) -> Algorithm:
    """A built-in name or the path of a candidate .py file."""
    if spec in BUILTINS:
        return algorithm_from_source(builtin_source(spec), spec, f"builtin:{spec}")
    path = Path(spec)
    if path.suffix == ".py" or path.exists():
        if not path.is_file():
            raise AlgorithmError(f"algorithm file {spec} does not exist")
        try:
            source = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise AlgorithmError(f"cannot read algorithm file {spec}: {e}") from None
        return algorithm_from_source(source, path.stem, str(path))
    builtin_source(spec)  # raises with the list of names
    raise AssertionError("unreachable")


def describe_builtins() -> list[tuple[str, str]]:
    """(name, first docstring line) for each built-in, without executing anything."""
    out = []
    for name in BUILTINS:
        try:
            doc = ast.get_docstring(ast.parse(builtin_source(name))) or ""
        except (AlgorithmError, FileNotFoundError):
            doc = "(missing)"
        out.append((name, doc.splitlines()[0] if doc else ""))
    return out


__all__ = ["AlgoConfig", "Algorithm", "AlgorithmError", "RolloutBatch", "BUILTINS", "load_algorithm",
           "algorithm_from_source", "builtin_source", "describe_builtins"]
