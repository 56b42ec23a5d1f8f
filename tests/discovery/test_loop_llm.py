"""The closed loop with LLM agents, through the real SDK clients and a loopback server: every role,
the accounting, a budget running out mid-run, a resume that reuses the cache, and no key on disk."""

import dataclasses
import json

import pytest

pytest.importorskip("openai")

from poise.algorithms import builtin_source
from poise.discovery.archive import Archive
from poise.discovery.loop import DiscoverConfig, Loop
from poise.agents.roles import AgentsConfig
from tests.agents.fake_llm import Answer, FakeLLM, good_team, role_of

KEY = "sk-live-DO-NOT-LEAK-4242424242"
CODES = {"LLM-AV-GRPO": builtin_source("av_grpo").replace('"""', '"""LLM version. ', 1),
         "LLM-RLOO": builtin_source("rloo").replace('"""', '"""LLM version. ', 1)}


def _cfg(url_spec, **kw):
    agents = AgentsConfig(llm=url_spec, timeout_s=10, max_retries=1, backoff_s=0.01,
                          **{k: kw.pop(k) for k in list(kw) if k.startswith("budget_")})
    base = dict(budget=2, fidelity="smoke", reeval_top=0, threads=1, verify_timeout_s=8, proposals_per_round=2,
                agents=agents)
    base.update(kw)
    return DiscoverConfig(**base)


def _files_contain(root, needle: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_an_llm_run_end_to_end(provider, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY", KEY)
    with FakeLLM(good_team(CODES)) as srv:
        summary = Loop(tmp_path, _cfg(srv.spec(provider))).run()
        roles = [role_of(r["provider"], r["body"]) for r in srv.requests]
    assert summary.evaluated == 2
    assert set(roles) == {"proposer", "implementer", "verifier", "reflector"}
    a = Archive(tmp_path / "archive.db", readonly=True)
    for name in CODES:
        (e,) = [x for x in a.entries() if x.name == name]
        assert e.status == "evaluated" and e.code.strip() == CODES[name].strip()
        assert e.proposal["operator"] == "llm" and e.proposal["author"].startswith(f"{provider}:fake-model")
        checks = {c["name"]: c for c in e.verification["checks"]}
        assert checks["semantic"]["ok"] and checks["claim: correct_above_wrong"]["ok"]
        assert e.reflection["author"].startswith(provider) and "kept the signal alive" in e.reflection["diagnosis"]
        # accounting: the candidate's share of the proposer's call, its implementer, verifier and reflector calls
        assert e.cost["llm_calls"] > 2 and e.cost["llm_tokens"] > 0 and e.cost["llm_s"] >= 0
        assert {c["role"] for c in a.llm_calls(e.id)} == {"implementer", "verifier", "reflector"}
    assert sum(c["tokens_in"] + c["tokens_out"] for c in a.llm_calls()) == a.llm_spent()[0] > 0
    a.close()
    # the key went to the server in every request, and into no file of the run
    assert all(KEY in r["headers"].get("authorization", r["headers"].get("x-api-key", "")) for r in srv.requests)
    assert _files_contain(tmp_path, KEY) == []
    assert _files_contain(tmp_path, "DO-NOT-LEAK") == []


def test_bad_code_is_repaired_from_the_verifier_errors_or_rejected_with_the_reason(tmp_path):
    broken = "import torch\n\ndef compute_advantages(batch, cfg):\n    return -batch.rewards\n"  # claims fail
    attempts = {"n": 0}
    team = good_team({"LLM-AV-GRPO": broken})

    def respond(provider, body):
        if role_of(provider, body) == "implementer":
            attempts["n"] += 1
            if attempts["n"] == 1:
                return Answer("I'd rather explain the idea in words.")  # malformed: goes back once
        return team(provider, body)

    with FakeLLM(respond) as srv:
        Loop(tmp_path, _cfg(srv.spec(), budget=1, proposals_per_round=1, max_attempts=2)).run()
    a = Archive(tmp_path / "archive.db", readonly=True)
    e = [x for x in a.entries() if x.name == "LLM-AV-GRPO"][0]
    assert e.status == "rejected" and "correct_above_wrong" in e.status_reason
    att = e.verification["attempts"]
    assert [x["stage"] for x in att] == ["property", "property"]  # both attempts reached the property tests
    impl = [c for c in a.llm_calls(e.id) if c["role"] == "implementer"]
    assert len(impl) == 3  # attempt 1 needed the parse retry; attempt 2 carried the verifier's errors back
    assert "correct_above_wrong" in json.loads(impl[2]["prompt"])[-1]["content"]
    a.close()


def test_a_proposer_that_never_answers_well_is_recorded_and_the_run_finishes(tmp_path):
    with FakeLLM(lambda p, b: Answer("Reinforcement learning is a field of machine learning.")) as srv:
        summary = Loop(tmp_path, _cfg(srv.spec(), budget=1)).run()
    assert summary.evaluated == 0
    a = Archive(tmp_path / "archive.db", readonly=True)
    fails = a.events(kind="agent_failed")
    assert len(fails) == 3 and all("malformed answer twice" in f.payload["reason"] for f in fails)  # then it stops
    assert "field of machine learning" in fails[0].payload["answer"]
    assert a.get(0).status == "evaluated"  # the baseline is still there
    a.close()


def test_budget_runs_out_mid_run_then_resume_reuses_the_cache(tmp_path):
    with FakeLLM(good_team(CODES)) as srv:
        srv.fixed_usage = (900, 100)  # every call costs 1,000 tokens
        # one worker: the baseline trains and is reflected on first; then room for the proposer's call and
        # one implementation, and the semantic review is refused
        summary = Loop(tmp_path, _cfg(srv.spec(), budget=2, budget_tokens=2500)).run()
        assert [role_of(r["provider"], r["body"]) for r in srv.requests] == ["reflector", "proposer", "implementer"]
        a = Archive(tmp_path / "archive.db", readonly=True)
        statuses = {e.name: e.status for e in a.entries()}
        assert a.llm_spent() == (3000, 0.0)
        assert [ev.payload["reason"] for ev in a.events(kind="llm_budget")][0].startswith("LLM token budget spent")
        a.close()
        # it stopped asking and kept what it had: the baseline, and both proposals, still to be implemented
        assert summary.evaluated == 0
        assert statuses == {"GRPO": "evaluated", "LLM-AV-GRPO": "proposed", "LLM-RLOO": "proposed"}

        # resume with a larger budget: the implementation already paid for comes from the archive
        summary2 = Loop(tmp_path, _cfg(srv.spec(), budget=2, budget_tokens=10**6), resume=True).run()
        assert summary2.evaluated == 2
        roles = [role_of(r["provider"], r["body"]) for r in srv.requests[3:]]
        assert roles.count("proposer") == 0 and roles.count("implementer") == 1  # LLM-RLOO's only
        a = Archive(tmp_path / "archive.db", readonly=True)
        calls = a.llm_calls()
        a.close()
        (hit,) = [c for c in calls if c["cached"]]
        assert hit["role"] == "implementer" and hit["tokens_in"] == 0
        paid = [c["cache_key"] for c in calls if not c["cached"]]
        assert len(paid) == len(set(paid))  # no question was paid for twice


def test_the_semantic_verifier_sends_a_mismatch_back_to_the_implementer(tmp_path):
    team = good_team({"LLM-AV-GRPO": CODES["LLM-AV-GRPO"]})
    said = {"n": 0}

    def respond(provider, body):
        if role_of(provider, body) == "verifier":
            said["n"] += 1
            if said["n"] == 1:
                return Answer('{"verdict": "mismatch", "reasons": ["the math divides by sqrt(p(1-p)); line 12 does not"]}')
            if said["n"] in (2, 3):
                return Answer("Looks fine to me!")  # no verdict, twice: that attempt fails too
        return team(provider, body)

    with FakeLLM(respond) as srv:
        Loop(tmp_path, _cfg(srv.spec(), budget=1, proposals_per_round=1, max_attempts=3)).run()
    a = Archive(tmp_path / "archive.db", readonly=True)
    e = [x for x in a.entries() if x.name == "LLM-AV-GRPO"][0]
    att = e.verification["attempts"]
    assert [x["stage"] for x in att] == ["semantic", "semantic", "passed"] and e.status == "evaluated"
    assert "does not implement the proposal's math: the math divides" in att[0]["errors"][0]
    assert "gave no verdict" in att[1]["errors"][0]
    impl = [c for c in a.llm_calls(e.id) if c["role"] == "implementer"]
    assert "line 12 does not" in json.loads(impl[1]["prompt"])[-1]["content"]
    a.close()


def test_free_form_entries_are_placed_in_mechanism_space_by_their_claims_and_config(tmp_path):
    """The selection's GP and diversity terms need features; an LLM entry has no offline design, so they
    come from what it claimed (and was tested to do) and from its CONFIG literal."""
    from poise.agents import offline
    from poise.discovery.propose import claimed_features as _claimed_features
    from poise.discovery.propose import features

    class E:  # the two fields _claimed_features reads
        def __init__(self, claims, code):
            self.proposal, self.code = {"claims": claims, "design": {}}, code

    grpo_like = _claimed_features(E(["correct_above_wrong"], "def compute_advantages(batch, cfg):\n    pass\n"))
    assert grpo_like == [0.0] * 10
    vm_av = _claimed_features(E(["bernoulli_scale", "invalid_below_valid"], "CONFIG = {'clip_high': 0.28}\n"))
    assert vm_av[:3] == [1.0, 1.0, 1.0] and vm_av[6] == 1.0
    # an offline design with the same mechanisms lands on the same axes
    loop = Loop(tmp_path, _cfg("openai:x@http://127.0.0.1:9/v1"))
    try:
        d = offline.Design(scale="bernoulli", validity="mask", clip_high=0.28)
        e = E([], "")
        e.proposal = {"design": dataclasses.asdict(d)}
        assert features(e)[:3] == vm_av[:3] and features(e)[6] == 1.0
    finally:
        loop.close()
