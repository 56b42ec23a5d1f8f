"""The verl backend's config file (TOML): the `trl` backend's sections (model, data, benchmarks, generation,
trainer: what is trained, on what, and how it is scored, so both engines score alike) and ``[verl]``:

    [verl]
    overrides = ["actor_rollout_ref.rollout.name=vllm", "actor_rollout_ref.model.enable_gradient_checkpointing=True"]
    n_gpus_per_node = 8      # GPUs one evaluation trains on (with --executor ray: give --gpus-per-eval the same)
    nnodes = 1

``overrides`` are the user's recipe as verl's own Hydra settings; poise's settings come after them, and
those that decide the algorithm (its estimator, loss, reward function, clip, KL and entropy terms) may not
be overridden: a recipe that sets one is refused, with its name.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from poise.backends.trl.config import TrlConfig, _Strict, validate


class VerlSection(_Strict):
    overrides: list[str] = Field(default_factory=list)
    n_gpus_per_node: int = Field(1, ge=1)
    nnodes: int = Field(1, ge=1, le=1)  # one node an evaluation: verl starts its own Ray on the node it runs on

    @field_validator("overrides")
    @classmethod
    def _owned(cls, v: list[str]) -> list[str]:
        from poise.backends.verl.launch import OWNED

        for o in v:
            key = o.lstrip("+~").split("=", 1)[0].strip()
            if "=" not in o:
                raise ValueError(f"{o!r} is not a verl setting: write KEY=VALUE, e.g. actor_rollout_ref.rollout.name=vllm")
            if any(key == k or key.startswith(k) for k in OWNED):
                raise ValueError(f"{key} is set by poise from the candidate (its estimator, loss, reward function and "
                                 f"CONFIG); remove it from [verl] overrides")
        return v


class VerlConfig(TrlConfig):
    verl: VerlSection = VerlSection()

    @field_validator("model")
    @classmethod
    def _a_real_model(cls, m):
        if m.name == "random":
            raise ValueError('verl trains a model it reads from a folder or the hub: name one (model.name = "random" '
                             'is for the trl backend; save a random model with save_pretrained to use one)')
        return m

    def trl_part(self) -> dict:
        """The sections the `trl` backend reads (it scores the start the same way)."""
        d = self.model_dump()
        d.pop("verl")
        return d


def parse(config: dict | None) -> VerlConfig:
    """The backend config, checked; a `BackendError` names every problem and where it is."""
    return validate(config, VerlConfig, "verl")
