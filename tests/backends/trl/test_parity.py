"""The TRL backend trains the algorithm it claims: one step of poise's trainer with a built-in moves the
weights exactly as TRL's own GRPOTrainer with the matching loss_type does, on the same completions and
rewards (plain SGD at lr 1, so the weight change is the gradient itself)."""

import copy
import dataclasses

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from poise.algorithms import load_algorithm  # noqa: E402
from poise.backends.trl import trainer as poise_trainer  # noqa: E402
from poise.backends.trl.config import ModelConfig  # noqa: E402
from poise.backends.trl.model import load_model, load_tokenizer  # noqa: E402

G, P, MAX_NEW = 4, 2, 12
CORRECT = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0]  # the graded answers of the 8 completions, fixed by the test


@pytest.fixture(scope="module")
def tiny():
    cfg = ModelConfig(name="random", hidden=32, layers=2, heads=2, intermediate=64)
    tok = load_tokenizer(cfg)
    return load_model(cfg, tok, seed=0), tok


def _args(tmp_path, **kw):
    return GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, seed=0, data_seed=0,
                      per_device_train_batch_size=P * G, num_generations=G, max_completion_length=MAX_NEW,
                      temperature=1.0, top_k=0, learning_rate=1.0, optim="sgd", lr_scheduler_type="constant",
                      max_grad_norm=1e9, max_steps=1, logging_steps=1, report_to="none", save_strategy="no",
                      disable_tqdm=True, beta=0.0, shuffle_dataset=False, **kw)


def _data():
    return Dataset.from_list([{"prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(P)])


def _step(trainer_cls, model, tok, tmp_path, rewards, **kw):
    seen = {}

    class Capture(trainer_cls):
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            seen["ids"] = out["completion_ids"].clone()
            return out

    before = copy.deepcopy(model.state_dict())
    t = Capture(model=model, processing_class=tok, train_dataset=_data(), reward_funcs=rewards, **kw)
    t.train()
    after = model.state_dict()
    return {k: before[k] - after[k] for k in before}, seen["ids"]


def _fixed_reward(completions, **_):
    return CORRECT[:len(completions)]


def _overlong(completion_ids, **_):  # TRL's soft overlong punishment, its default cache of a quarter
    from trl.rewards import get_soft_overlong_punishment

    return get_soft_overlong_punishment(MAX_NEW, MAX_NEW // 4)(completion_ids)


@pytest.mark.parametrize("name,loss_type,overrides,epsilon_high", [
    # the built-in's own aggregation is verl's token-mean: TRL's "bnpo"; set to a sequence mean, it is TRL's "grpo"
    ("grpo", "grpo", {"loss_agg": "seq-mean-token-mean"}, None),
    ("grpo", "bnpo", {}, None),
    ("dapo", "dapo", {}, 0.28),
])
def test_one_step_moves_the_weights_as_trls_own_loss_does(tiny, tmp_path, monkeypatch, name, loss_type, overrides,
                                                          epsilon_high):
    model, tok = tiny
    ours, theirs = copy.deepcopy(model), copy.deepcopy(model)
    # TRL divides by (std + 1e-4); the built-ins by (std + 1e-6): the same formula with TRL's epsilon
    algo = load_algorithm(name)
    algo = dataclasses.replace(algo, config=dataclasses.replace(algo.config, eps=1e-4, **overrides))
    graded = iter(())

    def fixed_grade(text, finished, reference):  # the same correctness TRL's reward function gives
        return True, bool(next(graded))

    monkeypatch.setattr(poise_trainer, "grade", fixed_grade)
    graded = iter(CORRECT)
    rewards = [_fixed_reward] + ([_overlong] if name == "dapo" else [])
    kw = {"epsilon_high": epsilon_high} if epsilon_high else {}
    d_trl, ids_trl = _step(GRPOTrainer, theirs, tok, tmp_path / "trl", rewards, args=_args(tmp_path / "a",
                                                                                          loss_type=loss_type, **kw))
    d_poise, ids_poise = _step(poise_trainer.PoiseGRPOTrainer, ours, tok, tmp_path / "poise", [_fixed_reward],
                               args=_args(tmp_path / "b"), algorithm=algo, max_new_tokens=MAX_NEW)
    assert torch.equal(ids_trl, ids_poise)  # the same completions
    moved = max(float(d.abs().max()) for d in d_trl.values())
    assert moved > 1e-4  # the step did something (the fixed rewards are not all equal in a group)
    for k in d_trl:
        torch.testing.assert_close(d_poise[k], d_trl[k], rtol=1e-4, atol=1e-6, msg=k)


def test_a_different_algorithm_moves_them_differently(tiny, tmp_path, monkeypatch):
    """The test above can fail: RLOO's leave-one-out baseline against TRL's GRPO is a different step."""
    model, tok = tiny
    ours, theirs = copy.deepcopy(model), copy.deepcopy(model)
    graded = iter(CORRECT)
    monkeypatch.setattr(poise_trainer, "grade", lambda text, finished, ref: (True, bool(next(graded))))
    d_trl, _ = _step(GRPOTrainer, theirs, tok, tmp_path / "trl", [_fixed_reward],
                     args=_args(tmp_path / "a", loss_type="bnpo"))
    d_poise, _ = _step(poise_trainer.PoiseGRPOTrainer, ours, tok, tmp_path / "poise", [_fixed_reward],
                       args=_args(tmp_path / "b"), algorithm=load_algorithm("rloo"), max_new_tokens=MAX_NEW)
    assert max(float((d_poise[k] - d_trl[k]).abs().max()) for k in d_trl) > 1e-3
