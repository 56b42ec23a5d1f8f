import json

import pytest

from poise.backends import BackendError, BackendSpec, get_backend, make_spec
from poise.backends.trl.config import DEFAULT_BENCHMARKS, parse
from poise.backends.trl.data import MathProblem, benchmark_set, render_tiny, tiny_training


def test_defaults_are_the_papers_six_benchmarks_and_weights():
    cfg = parse({})
    assert list(cfg.benchmarks) == list(DEFAULT_BENCHMARKS)
    assert cfg.weights == {"aime24": 0.2, "aime25": 0.2, "amc": 0.15, "math500": 0.15, "minerva": 0.15,
                           "olympiad": 0.15}


@pytest.mark.parametrize("config,names", [
    ({"trainer": {"stpes": 3}}, "trainer.stpes"),
    ({"trainer": {"prompts_per_step": 3, "group_size": 4, "micro_batches": 5}}, "micro_batches"),
    ({"data": {"template": "no placeholder"}}, "{question}"),
    ({"benchmarks": {"a": {"source": "x.jsonl", "weight": 0}}}, "sum to 0"),
    ({"benchmarks": {"a": {"source": "x.jsonl", "weight": 1, "metric": "pass@10"}}}, "benchmarks.a.metric"),
    ({"model": {"dtype": "float8"}}, "model.dtype"),
    ({"benchmarks": {"a": {"source": "x.jsonl", "weight": 1, "metric": "greedy"}}}, "at least one must be pass@k"),
    ({"data": {"template": "{question} in \\boxed{}"}}, "write a literal brace as {{"),
])
def test_a_bad_config_names_the_key(config, names):
    with pytest.raises(BackendError) as e:
        parse(config)
    assert names in str(e.value)


def test_the_command_line_checks_backend_and_config_file(tmp_path):
    with pytest.raises(BackendError, match="choose one of tiny, trl"):
        make_spec("verl2", "standard", None)
    with pytest.raises(BackendError, match="--backend-config is for --backend trl"):
        make_spec("tiny", "standard", tmp_path / "x.toml")
    with pytest.raises(BackendError, match="no such file"):
        make_spec("trl", "standard", tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[trainer\nsteps = 1\n")
    with pytest.raises(BackendError, match="not valid TOML"):
        make_spec("trl", "standard", bad)
    good = tmp_path / "good.toml"
    good.write_text("[trainer]\nsteps = 3\n")
    spec = make_spec("trl", "standard", good)
    assert spec.label == "trl" and spec.config == {"trainer": {"steps": 3}}
    assert get_backend(spec).steps == 3


def test_the_fingerprint_follows_the_config():
    a = get_backend(BackendSpec("trl", "trl", {"model": {"name": "random"}}))
    b = get_backend(BackendSpec("trl", "trl", {"model": {"name": "random"}, "trainer": {"lr": 2e-6}}))
    assert a.fingerprint() == get_backend(BackendSpec("trl", "trl", {"model": {"name": "random"}})).fingerprint()
    assert a.fingerprint() != b.fingerprint()


def test_the_tiny_backend_keeps_the_sandbox_fingerprint():
    from poise.evaluation.fidelity import sandbox_fingerprint

    assert get_backend(BackendSpec("tiny", "smoke")).fingerprint() == sandbox_fingerprint("smoke")


def test_tiny_math_renders_natural_language_and_keeps_held_out_sets_apart():
    from poise.sandbox.task import Problem

    assert render_tiny(Problem("14+7-9=", 12, (14, 7, 9), ("+", "-"))) == MathProblem("What is 14 + 7 - 9?", "12")
    cfg = parse({})
    bench = cfg.benchmarks["aime24"]
    search, confirm = benchmark_set(bench, cfg.data, "search"), benchmark_set(bench, cfg.data, "confirm")
    assert len(search) == len(confirm) == bench.limit
    assert not {p.question for p in search} & {p.question for p in confirm}
    train = {p.question for p in tiny_training(2000, 0)}
    assert not train & {p.question for p in search + confirm}


def test_a_file_benchmark_alternates_its_problems_between_the_splits(tmp_path):
    f = tmp_path / "b.jsonl"
    f.write_text("\n".join(json.dumps({"problem": f"q{i}", "answer": str(i)}) for i in range(10)))
    cfg = parse({"benchmarks": {"b": {"source": str(f), "weight": 1, "limit": 0}}})
    s = benchmark_set(cfg.benchmarks["b"], cfg.data, "search")
    c = benchmark_set(cfg.benchmarks["b"], cfg.data, "confirm")
    assert [p.question for p in s] == ["q0", "q2", "q4", "q6", "q8"] and [p.answer for p in c] == ["1", "3", "5", "7", "9"]
    renamed = parse({"benchmarks": {"b": {"source": str(f), "weight": 1}}, "data": {"question": "question"}})
    with pytest.raises(BackendError, match="no field 'question'.*data.question"):
        benchmark_set(renamed.benchmarks["b"], renamed.data, "search")


def test_the_shipped_example_config_is_the_papers_setup():
    import tomllib
    from pathlib import Path

    cfg = parse(tomllib.loads((Path(__file__).parents[3] / "examples" / "qwen2.5-math-1.5b.toml").read_text()))
    assert cfg.model.name == "Qwen/Qwen2.5-Math-1.5B" and cfg.trainer.lr == 1e-6 and cfg.trainer.group_size == 8
    assert cfg.weights == {"aime24": 0.2, "aime25": 0.2, "amc": 0.15, "math500": 0.15, "minerva": 0.15,
                           "olympiad": 0.15}
    assert {n: (b.metric, b.k) for n, b in cfg.benchmarks.items() if b.metric == "pass@k"} == {
        "aime24": ("pass@k", 32), "aime25": ("pass@k", 32), "amc": ("pass@k", 32)}
