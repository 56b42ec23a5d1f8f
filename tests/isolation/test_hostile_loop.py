"""The discovery loop against a hostile LLM implementer (a real SDK client and a loopback server): code
the lint refuses never runs, and code that passes the lint runs only in the jail, where its attacks
change nothing: the archive holds what an honest copy of the algorithm earns."""

import pytest

pytest.importorskip("openai")

from poise.agents.roles import AgentsConfig
from poise.discovery.archive import Archive
from poise.discovery.loop import DiscoverConfig, Loop
from tests.agents.fake_llm import FakeLLM, good_team
from tests.isolation.conftest import evaluate_source
from tests.isolation.hostile import MARKER, attack, processes_with
from tests.isolation.test_hostile_grad_fn import WALK, source
from tests.isolation.test_hostile_score_tampering import PATCHES

pytestmark = pytest.mark.usefixtures("jail")

KILL_AND_WRITE = f"""
    import os, signal
    for pid in (os.getppid(), 1, -1):
        try:
            os.kill(pid, signal.SIGKILL)
        except BaseException:
            pass
    try:
        open("/tmp/{MARKER}", "w").write("x")
        os.fork()
    except BaseException:
        pass
"""
# the autograd walk passes the lint and runs (in the jail); the other two are refused before they run
CODES = {"LLM-WALKER": source(WALK), "LLM-TAMPER": attack("pass", imports=PATCHES),
         "LLM-KILLER": attack(KILL_AND_WRITE, imports="")}


def test_a_hostile_implementer_cannot_change_a_score(tmp_path, monkeypatch, grpo_smoke):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeLLM(good_team(CODES, names=["LLM-TAMPER", "LLM-KILLER", "LLM-WALKER"])) as srv:
        agents = AgentsConfig(llm=srv.spec("openai"), timeout_s=10, max_retries=1, backoff_s=0.01)
        cfg = DiscoverConfig(budget=1, fidelity="smoke", reeval_top=0, threads=1, verify_timeout_s=15,
                             proposals_per_round=3, agents=agents)
        Loop(tmp_path, cfg).run()
    a = Archive(tmp_path / "archive.db", readonly=True)
    by_name = {e.name: e for e in a.entries()}
    a.close()
    assert by_name["GRPO"].evaluations[0].metrics == grpo_smoke.metrics
    walker = by_name["LLM-WALKER"]
    assert walker.status == "evaluated" and "bubblewrap" in walker.verification["isolation"]
    honest = evaluate_source(source("    pass"), "honest")
    assert walker.evaluations[0].metrics == honest.metrics
    for name, phrase in (("LLM-TAMPER", "`import poise.backends.tiny` is not allowed"),
                         ("LLM-KILLER", "`import os` is not allowed")):
        e = by_name[name]
        assert e.status == "rejected" and e.verification["stage"] == "static", (name, e.status)
        assert any(phrase in err for err in e.verification["errors"]), e.verification["errors"]
    assert processes_with(MARKER) == []
