"""Each agent role through a real LLM client and a real loopback server, for both protocols."""

import json
import random

import pytest

pytest.importorskip("openai")
pytest.importorskip("anthropic")

from poise.agents import offline
from poise.agents.llm import BudgetExhausted
from poise.agents.llm_roles import curve_table, load_prompt, render
from poise.agents.roles import ROLES, AgentFailure, Agents, AgentsConfig, ProposalContext
from poise.algorithms import builtin_source
from poise.discovery.archive import Archive
from poise.reflect.diagnose import reflect
from tests.agents.fake_llm import Answer, FakeLLM, good_team, role_of

FAST = dict(timeout_s=5, max_retries=1, backoff_s=0.01)
PROVIDERS = ["openai", "anthropic"]


@pytest.fixture
def archive(tmp_path):
    a = Archive(tmp_path / "archive.db")
    a.add_entry("GRPO", builtin_source("grpo"), {"name": "GRPO"}, [], 0)
    yield a
    a.close()


def _agents(srv, provider, archive, **kw):
    return Agents(AgentsConfig(llm=srv.spec(provider), **{**FAST, **kw}), ledger=archive)


def _ctx(n=2):
    root = offline.ArchiveNode(id=0, name="GRPO", design=offline.GRPO, status="evaluated", score=0.0,
                               metrics={"overall": 92.0, "hard_pass1": 28.0, "length": 44.0},
                               diagnosis="entropy fell steadily", mechanism="group-normalised advantages")
    failed = offline.ArchiveNode(id=1, name="BAD-GRPO", design=None, status="failed", score=None,
                                 diagnosis="NaN at step 3", mechanism="divides by the pass rate")
    return ProposalContext(parent=root, parent_code=builtin_source("grpo"), parent_math="A = (r - mean)/std",
                           nodes=[root, failed], references=[("exploratory", failed)],
                           objective_text="maximise Overall", objective_weights={"overall": 1.0},
                           baseline_metrics=root.metrics, n=n, round=1, rng=random.Random(0))


def test_every_prompt_template_renders_and_missing_values_are_errors():
    for role in ROLES:
        system, user = load_prompt(role)
        assert system and "{{" in user
    with pytest.raises(KeyError, match="objective"):
        render("{{objective}} and {{n}}", n=1)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_proposer_good_run(provider, archive):
    team = good_team({"LLM-AV-GRPO": "", "GRPO": ""}, names=["LLM-AV-GRPO", "GRPO"])
    with FakeLLM(team) as srv:
        props = _agents(srv, provider, archive).propose(_ctx())
        prompt = json.dumps(srv.requests[0]["body"])
    assert [p.name for p in props] == ["LLM-AV-GRPO", "GRPO-2"]  # a taken name gets a suffix
    p = props[0]
    assert p.claims == ["correct_above_wrong"] and "bogus_claim" in p.rationale  # unknown claims dropped
    assert p.builds_on == [0] and p.operator == "llm" and p.design == {} and p.author.startswith(provider)
    # the prompt carries the parent's code and reflection, the tiered references and the literature
    for needle in ("entropy fell steadily", "[exploratory] #1 BAD-GRPO", "NaN at step 3", "def compute_advantages",
                   "Dr. GRPO", "bernoulli_scale", "Propose 2 new"):
        assert needle in prompt, needle


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_malformed_answer_goes_back_once_with_the_error(provider, archive):
    with FakeLLM(good_team({"X-GRPO": ""})) as srv:
        srv.queue = [Answer("I would scale the advantages by the variance.")]
        props = _agents(srv, provider, archive).propose(_ctx(n=1))
        second = srv.requests[1]["body"]["messages"]
    assert [p.name for p in props] == ["X-GRPO"]
    assert "could not be used: no JSON a list" in json.dumps(second[-1])
    assert any(m["role"] == "assistant" and "scale the advantages" in json.dumps(m) for m in second)
    calls = archive.llm_calls()
    assert len(calls) == 2 and all(c["ok"] for c in calls)


def test_malformed_twice_fails_the_step_with_the_answer(archive):
    with FakeLLM(lambda p, b: Answer('[{"name": "X"}]')) as srv:  # JSON, but not a proposal
        with pytest.raises(AgentFailure, match="malformed answer twice.*hypothesis") as e:
            _agents(srv, "openai", archive).propose(_ctx(n=1))
    assert e.value.role == "proposer" and e.value.answer == '[{"name": "X"}]'


@pytest.mark.parametrize("provider", PROVIDERS)
def test_implementer_good_run_and_repair_conversation(provider, archive):
    code = builtin_source("av_grpo")
    prop = offline.Proposal(name="LLM-AV-GRPO", hypothesis="h", mechanism="m", math="A / sqrt(p(1-p))",
                            expected_dynamics="", claims=["bernoulli_scale"], hooks=[], builds_on=[0],
                            operator="llm", design={}, rationale="")
    eid = archive.add_entry("LLM-AV-GRPO", "", prop.to_dict(), [0], 1)
    with FakeLLM(good_team({"LLM-AV-GRPO": code})) as srv:
        agents = _agents(srv, provider, archive)
        got, _ = agents.implement(prop, None, entry_id=eid, attempt=1, parent_name="GRPO",
                                  parent_code=builtin_source("grpo"))
        assert got.strip() == code.strip()
        first = json.dumps(srv.requests[0]["body"])
        for needle in ("RolloutBatch", "group_std", "A / sqrt(p(1-p))", "bernoulli_scale", "torch.nn.functional"):
            assert needle in first, needle
        agents.implement(prop, ["claim 'bernoulli_scale' failed: got 1.0"], entry_id=eid, attempt=2,
                         parent_name="GRPO", parent_code=builtin_source("grpo"), previous_code=got)
        msgs = srv.requests[1]["body"]["messages"]
    assert "bernoulli_scale' failed" in json.dumps(msgs[-1]) and any(m["role"] == "assistant" for m in msgs)
    calls = archive.llm_calls(eid)
    assert len(calls) == 2 and all(c["role"] == "implementer" for c in calls)
    assert agents.take_usage().calls == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_semantic_verifier_verdicts(provider, archive):
    prop = offline.Proposal(name="P", hypothesis="h", mechanism="m", math="A = r - mean", expected_dynamics="",
                            claims=[], hooks=[], builds_on=[0], operator="llm", design={}, rationale="")
    with FakeLLM(good_team({})) as srv:
        srv.queue = [Answer('{"verdict": "mismatch", "reasons": ["divides by std, the math does not"]}')]
        agents = _agents(srv, provider, archive)
        checks = [{"name": "finite", "ok": True}]
        assert agents.review(prop, builtin_source("grpo"), checks, entry_id=0, attempt=1) == (
            False, ["divides by std, the math does not"])
        assert agents.review(prop, builtin_source("grpo"), checks, entry_id=0, attempt=2) == (True, [])
    offline_agents = Agents(AgentsConfig())
    assert offline_agents.review(prop, "", [], entry_id=0, attempt=1) is None


def _run_data():
    traj = [{"step": i, "reward": 0.5 + 0.01 * i, "accuracy": 0.5, "validity": 1.0, "entropy": 0.3 - 0.001 * i,
             "response_length": 40.0, "kl": 0.001 * i, "clip_frac": 0.0, "grad_norm": 1.0} for i in range(20)]
    from poise.sandbox.benchmark import HARD_TIERS
    tiers = {t: {"score": 50.0, "pass@1": 30.0} for t in HARD_TIERS}
    metrics = {"overall": 93.0, "length": 41.0, "validity": 99.0, "tiers": tiers}
    return traj, metrics


@pytest.mark.parametrize("provider", PROVIDERS)
def test_reflector_good_run_and_failure_keeps_the_detectors(provider, archive):
    traj, metrics = _run_data()
    base = reflect({"name": "X"}, [traj], [metrics])
    with FakeLLM(good_team({})) as srv:
        agents = _agents(srv, provider, archive)
        r = agents.reflect(base, {"mechanism": "m", "math": "x"}, [traj], [metrics], None, "maximise Overall",
                           entry_id=0, name="GRPO")
        prompt = json.dumps(srv.requests[0]["body"])
        srv.queue = [Answer("no idea"), Answer("still no idea")]
        r2 = agents.reflect(base, {"mechanism": "m2"}, [traj], [metrics], None, "", entry_id=0, name="GRPO")
    assert "kept the signal alive" in r.diagnosis and r.verdict == "keep" and r.ideas == ["try a leave-one-out baseline"]
    assert r.author.startswith(provider) and r.findings == base.findings and r.suggestions == base.suggestions
    assert "entropy: 0.3" in prompt and "Overall: 93.00" in prompt
    assert r2.diagnosis == base.diagnosis and "malformed answer twice" in r2.llm_error


def test_curve_table_reads_seed_means_at_even_steps():
    traj, _ = _run_data()
    steps, table = curve_table([traj, traj], [traj])
    assert steps == "0, 5, 10, 14, 19"
    assert "- reward: 0.5 [0.5], 0.55 [0.55]" in table


def test_budget_exhaustion_propagates(archive):
    with FakeLLM(good_team({"X-GRPO": ""})) as srv:
        agents = _agents(srv, "openai", archive, budget_tokens=1)
        agents.propose(_ctx(n=1))
        agents.propose(_ctx(n=1))  # the same question at the same place: answered from the cache, free
        later = _ctx(n=1)
        later.round = 2
        with pytest.raises(BudgetExhausted):
            agents.propose(later)
        assert len(srv.requests) == 1


def test_mixing_roles_and_config_errors(archive):
    with FakeLLM(good_team({})) as srv:
        agents = Agents(AgentsConfig(llm=srv.spec("anthropic"), roles={"reflector": "offline",
                                                                        "verifier": srv.spec("openai", "other")}),
                        ledger=archive)
        assert agents.llms["reflector"] is None and agents.llms["proposer"].spec.provider == "anthropic"
        assert agents.llms["verifier"].spec.model == "other"
        assert agents.llms["proposer"] is agents.llms["implementer"]  # one client, one budget per model
    with pytest.raises(ValueError, match="unknown role"):
        AgentsConfig(roles={"critic": "offline"}).validate()
    with pytest.raises(ValueError, match="LLM proposer needs an LLM implementer"):
        AgentsConfig(llm="openai:x@http://127.0.0.1:1/v1", roles={"implementer": "offline"}).validate()
    # the offline proposer's designs work with an LLM implementer, and everything offline is the default
    AgentsConfig(roles={"implementer": "openai:x@http://127.0.0.1:1/v1"}).validate()
    assert not AgentsConfig().uses_llm
    assert role_of("openai", {"messages": [{"content": load_prompt("verifier")[0]}]}) == "verifier"
