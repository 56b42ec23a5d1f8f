"""The `verl` backend: each evaluation trains the user's verl recipe with the candidate's plugin, then scores
the final checkpoint on the config's benchmarks with the TRL backend's scoring (the same metrics).

    plugin.py   what runs inside verl: the candidate behind verl's registries, in its jailed hook process
    launch.py   the plugin module's text and the verl settings that select it
    config.py   the backend config: the `trl` backend's model, data, benchmarks, generation and trainer
                sections, plus [verl] (the recipe's own settings, the GPUs of one evaluation)

One evaluation, in the evaluation's worker process (trusted, as for the other backends):
1. the training problems of ``[data]`` as verl's parquet (``prompt`` as chat messages,
   ``reward_model.ground_truth``), and the candidate's plugin module, in a private folder;
2. ``python -m verl.trainer.main_ppo`` with the recipe's settings, then poise's (model, data, group
   size, steps, learning rate, the candidate's estimator, loss and CONFIG, a checkpoint of the final
   weights in Hugging Face format), as a subprocess that starts its own Ray on this machine with the
   GPUs it was given (on a cluster, ``--executor ray --gpus-per-eval N`` places the evaluation on a node
   with N free GPUs, and CUDA_VISIBLE_DEVICES holds verl to them);
3. verl's metrics, read from its file logger as they come, become poise's curves (`CURVE_KEYS`);
4. the final checkpoint is scored on ``split`` as the TRL backend scores its model.

verl needs GPUs: without one, this backend says so when it is built, before anything runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from poise.algorithms.base import Algorithm
from poise.backends.base import BackendError, BackendSpec, EvalResult, Tier, sandbox_only
from poise.backends.verl.config import VerlConfig, parse
from poise.backends.verl.plugin import CURVES_ENV

LABEL = "verl"
# the module run as verl's trainer: verl.trainer.main_ppo; the tests name a CPU stand-in that runs verl's code
# around its GPU training loop (tests/backends/verl/cpu_main_ppo.py)
MAIN_ENV = "POISE_VERL_MAIN"

# poise's curve keys, from verl's logged metrics (the first key verl logs wins)
CURVE_KEYS = {
    "reward": ("critic/rewards/mean", "critic/score/mean"),
    "accuracy": ("critic/score/mean",),
    "entropy": ("actor/entropy", "actor/entropy_loss"),
    "response_length": ("response_length/mean",),
    "kl": ("actor/kl_loss", "actor/ppo_kl"),
    "clip_frac": ("actor/pg_clipfrac",),
    "grad_norm": ("actor/grad_norm",),
    "loss": ("actor/pg_loss",),
    "truncated": ("response_length/clip_ratio",),
    "step_s": ("timing_s/step",),
}


def has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def need_verl() -> None:
    missing = [m for m in ("verl", "transformers", "datasets") if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendError(f"--backend verl needs {', '.join(missing)}: pip install 'poise[verl,trl]' (and verl's GPU "
                           f"stack: vLLM or SGLang, flash-attn; see verl's installation guide)")


def curve_row(step: int, data: dict) -> dict:
    """One of poise's curve rows from one step of verl's logged metrics."""
    row: dict = {"step": step}
    for key, names in CURVE_KEYS.items():
        for n in names:
            v = data.get(n)
            if isinstance(v, (int, float)):
                row[key] = float(v)
                break
    if "actor/entropy_loss" in data and "actor/entropy" not in data:
        row["entropy"] = float(data["actor/entropy_loss"])
    row["verl"] = {k: v for k, v in data.items() if isinstance(v, (int, float)) and k.split("/")[0] in
                   ("actor", "critic", "response_length", "timing_s", "perf")}
    return row


def read_stats(path: Path) -> dict[int, dict]:
    """The plugin estimator's statistics of each training step (`plugin.step_stats`), by its call index."""
    out: dict[int, dict] = {}
    if path.exists():
        for ln in path.read_bytes().split(b"\n")[:-1]:
            try:
                d = json.loads(ln)
                out[int(d.pop("step"))] = d
            except (ValueError, KeyError, TypeError):
                continue
    return out


def read_log(path: Path, seen: int) -> list[tuple[int, dict]]:
    """(step, metrics) of verl's file logger lines after the first ``seen`` complete ones."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")[:-1]  # the last piece may be a line being written
    out = []
    for ln in lines[seen:]:
        try:
            d = json.loads(ln)
            out.append((int(d["step"]), dict(d["data"])))
        except (ValueError, KeyError, TypeError):
            out.append((-1, {}))
    return out


class VerlBackend:
    def __init__(self, spec: BackendSpec):
        self.spec = spec
        # whether the run's candidates run jailed: the worker sets it from the run's isolation decision
        # (`isolation.choose_isolation`), and the plugin inside verl follows the same decision
        self.jailed = True
        self.cfg: VerlConfig = parse(spec.config)
        self.steps = self.cfg.trainer.steps
        w = self.cfg.weights
        self.tiers = tuple(Tier(name, b.metric, w[name]) for name, b in self.cfg.benchmarks.items())

    @staticmethod
    def check_gpu() -> None:
        """verl trains on GPUs: on a machine without one, say so before anything runs."""
        if not has_gpu():
            raise BackendError("--backend verl trains with verl, which needs a GPU, and this machine has none (torch "
                               "sees no CUDA device); run it on a GPU machine, or with --executor ray --gpus-per-eval N "
                               "on a Ray cluster whose nodes have GPUs")

    def prepare(self, progress=None, log: Callable[[str], None] = lambda s: None) -> None:
        need_verl()

    def settings(self, module: str, plugin: Path, algo_config: dict, data: Path, ckpt: Path, seed: int,
                 needs_ref: bool = False, model: str | None = None) -> list[str]:
        """The overrides of verl.trainer.main_ppo: the recipe's first, then poise's, which win. ``needs_ref``:
        the candidate reads the reference log-probs; ``model``: the model's folder or hub id (default: the
        config's name)."""
        from poise.backends.verl.launch import algorithm_settings

        c, tr, gen, v = self.cfg, self.cfg.trainer, self.cfg.generation, self.cfg.verl
        a = "actor_rollout_ref"
        return [*v.overrides,
                f"{a}.model.path={model or c.model.name}", f"data.train_files={data / 'train.parquet'}",
                f"data.val_files={data / 'train.parquet'}", "trainer.val_before_train=False", "trainer.test_freq=-1",
                f"data.train_batch_size={tr.prompts_per_step}", f"{a}.actor.ppo_mini_batch_size={tr.prompts_per_step}",
                f"{a}.rollout.n={tr.group_size}", f"data.max_response_length={gen.max_new_tokens}",
                f"{a}.rollout.temperature={gen.temperature}", f"{a}.actor.optim.lr={tr.lr}",
                f"{a}.actor.grad_clip={tr.grad_clip}", f"{a}.actor.ppo_epochs=1",
                f"trainer.total_training_steps={tr.steps}", f"trainer.save_freq={tr.steps}",
                f"trainer.default_local_dir={ckpt}", "trainer.resume_mode=disable",
                f"{a}.actor.checkpoint.save_contents=['model','hf_model']", "trainer.logger=['console','file']",
                f"trainer.n_gpus_per_node={v.n_gpus_per_node}", f"trainer.nnodes={v.nnodes}",
                f"data.seed={seed}", f"{a}.actor.data_loader_seed={seed}",
                "trainer.project_name=poise", f"trainer.experiment_name={module}",
                *algorithm_settings(module, algo_config, str(plugin), needs_ref)]

    def write_data(self, folder: Path, seed: int) -> None:
        """The training problems as verl's parquet: chat-message prompts, the reference answer to grade."""
        import pandas as pd

        from poise.backends.trl.data import training_set

        c = self.cfg
        problems = training_set(c.data, c.trainer.steps * c.trainer.prompts_per_step, seed)
        rows = [{"data_source": "poise", "ability": "math",
                 "prompt": [{"role": "user", "content": c.data.template.format(question=p.question)}],
                 "reward_model": {"style": "rule", "ground_truth": p.answer},
                 "extra_info": {"index": i}} for i, p in enumerate(problems)]
        pd.DataFrame(rows).to_parquet(folder / "train.parquet")

    def evaluate(self, algorithm: Algorithm, seed: int, on_step: Callable[[int, dict], None] | None = None,
                 split: str = "search") -> EvalResult:
        import dataclasses

        from poise.backends.trl.model import resolve
        from poise.backends.verl.launch import plugin_module
        from poise.isolation import jail_status
        from poise.sandbox.trainer import uses_reference

        sandbox_only(algorithm, "verl")
        need_verl()
        self.check_gpu()
        if self.jailed and not jail_status().ok:
            raise BackendError(f"the verl plugin runs the candidate in the jail, which cannot start here "
                               f"({jail_status().reason}); install bubblewrap on the GPU machine")
        t0 = time.time()
        module = "poise_c" + hashlib.sha256(algorithm.source.encode()).hexdigest()[:10]
        curves: list[dict] = []
        with tempfile.TemporaryDirectory(prefix="poise-verl-") as tmp:
            folder = Path(tmp)
            plugin = folder / f"{module}.py"
            plugin.write_text(plugin_module(module, algorithm.source, algorithm.hooks, not self.jailed, algorithm.origin,
                                            f"{algorithm.name}: written by poise's verl backend for one evaluation"))
            self.write_data(folder, seed)
            ckpt = folder / "ckpt"
            log, stats = folder / "metrics.jsonl", folder / "poise_steps.jsonl"
            args = self.settings(module, plugin, dataclasses.asdict(algorithm.config), folder, ckpt, seed,
                                 uses_reference(algorithm), resolve(self.cfg.model))
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]),
                   "VERL_USE_EXTERNAL_MODULES": module, "VERL_FILE_LOGGER_PATH": str(log), CURVES_ENV: str(stats),
                   "RAY_ADDRESS": "local"}  # verl's own Ray, on this node: never the cluster poise may run on
            out = open(folder / "verl.log", "wb")
            # its own process group, and death with this worker (a cancelled evaluation must free its GPUs);
            # the Ray that verl starts shares verl's fate (Ray's own PR_SET_PDEATHSIG)
            main = os.environ.get(MAIN_ENV, "verl.trainer.main_ppo")
            proc = subprocess.Popen([sys.executable, "-m", main, *args], stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=folder, start_new_session=True, preexec_fn=_die_with_parent)
            seen = 0
            try:
                self._follow(proc, log, stats, seen, curves, on_step)
            finally:
                if proc.poll() is None:  # an error here, or Ctrl-C: verl goes too
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            out.close()
            if proc.returncode != 0:
                tail = (folder / "verl.log").read_text(errors="replace")[-3000:]
                raise BackendError(f"verl exited with code {proc.returncode}; the end of its output:\n{tail}")
            t_eval = time.time()
            metrics = self.score(ckpt, seed, split)
        return EvalResult(algorithm.name, seed, LABEL, curves, metrics, time.time() - t0,
                          {"split": split, "train_s": t_eval - t0, "eval_s": time.time() - t_eval,
                           "hooks": algorithm.hooks})

    @staticmethod
    def _follow(proc, log: Path, stats: Path, seen: int, curves: list[dict], on_step) -> None:
        """verl's log into ``curves`` (and ``on_step``) as its steps come, until it exits."""
        while True:
            done = proc.poll() is not None
            for step, data in read_log(log, seen):
                seen += 1
                if step < 0:
                    continue
                row = curve_row(len(curves), data)
                row.update(read_stats(stats).get(len(curves), {}))  # the estimator ran before verl logged the step
                curves.append(row)
                if on_step is not None:
                    on_step(row["step"], row)
            if done:
                return
            time.sleep(1.0)

    def score(self, ckpt: Path, seed: int, split: str) -> dict:
        """The final checkpoint (Hugging Face format, written by verl) on the benchmarks, as the TRL backend scores."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from poise.backends.tiny import pick_device
        from poise.backends.trl.scoring import score

        hf = sorted(ckpt.glob("global_step_*/actor/huggingface"), key=lambda p: int(p.parts[-3].split("_")[-1]))
        if not hf:
            raise BackendError(f"verl wrote no Hugging Face checkpoint under {ckpt} (checkpoint.save_contents "
                               f"needs 'hf_model')")
        tok = AutoTokenizer.from_pretrained(hf[-1])
        model = AutoModelForCausalLM.from_pretrained(hf[-1])
        model = model.to(pick_device())  # type: ignore[arg-type]
        return score(model, tok, self.cfg, seed, split)

    def evaluate_start(self, seed: int, split: str = "search") -> EvalResult:
        from poise.backends.trl import TrlBackend

        res = TrlBackend(BackendSpec("trl", config=self.cfg.trl_part())).evaluate_start(seed, split)
        res.fidelity = LABEL
        return res

    def fingerprint(self) -> str:
        blob = json.dumps({"config": self.cfg.model_dump(), "verl": _version("verl")}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def expected_s(self, threads: int) -> float:
        # a guess for a GPU: verl's step is dominated by generation, ~20 ms a sampled token batch-wide step
        tr, gen = self.cfg.trainer, self.cfg.generation
        return 120.0 + tr.steps * (10.0 + 0.02 * gen.max_new_tokens)


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None
