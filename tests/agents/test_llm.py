"""The LLM clients through the real openai and anthropic SDKs, against real HTTP servers on loopback."""

import pytest

pytest.importorskip("openai")
pytest.importorskip("anthropic")

from poise.agents.llm import LLM, Budget, BudgetExhausted, LLMConfig, LLMError, ModelSpec, redact, safe_url
from poise.discovery.archive import Archive
from tests.agents.fake_llm import Answer, FakeLLM

FAST = LLMConfig(timeout_s=5, max_retries=3, backoff_s=0.01, max_tokens=64)
MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture
def archive(tmp_path):
    a = Archive(tmp_path / "archive.db")
    yield a
    a.close()


def test_model_spec_parsing():
    assert ModelSpec.parse("openai:gpt-4.1-mini") == ModelSpec("openai", "gpt-4.1-mini")
    assert ModelSpec.parse("claude-sonnet-4-5").provider == "anthropic"
    s = ModelSpec.parse("openai:Qwen/Qwen2.5-7B-Instruct@http://localhost:8000/v1")
    assert (s.model, s.base_url, s.is_local) == ("Qwen/Qwen2.5-7B-Instruct", "http://localhost:8000/v1", True)
    assert not ModelSpec.parse("openai:m@https://api.example.com/v1").is_local
    with pytest.raises(ValueError, match="unknown provider 'gemini'"):
        ModelSpec.parse("gemini:pro")
    with pytest.raises(ValueError, match="expected"):
        ModelSpec.parse("a b")
    assert safe_url("http://user:pw@host:8000/v1?key=abc") == "http://host:8000/v1"


def test_missing_key_for_an_official_api_names_the_variable(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(LLMError, match="ANTHROPIC_API_KEY"):
        LLM(ModelSpec.parse("anthropic:claude-x"), FAST).chat("proposer", "s", MSG, key="k")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_good_call_is_answered_counted_and_recorded_without_the_key(provider, archive, monkeypatch):
    var = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
    monkeypatch.setenv(var, "sk-test-SECRET-0123456789")
    with FakeLLM(lambda p, b: Answer("the answer")) as srv:
        llm = LLM(ModelSpec.parse(srv.spec(provider)), FAST, Budget(), archive)
        r = llm.chat("proposer", "you are terse", MSG, key="q1", entry_id=None)
        assert r.text == "the answer" and r.tokens_in > 0 and r.tokens_out > 0 and not r.cached
        assert r.cost_usd == 0.0  # a loopback server costs nothing
        req = srv.requests[0]
        assert req["provider"] == provider
        sent = req["headers"].get("authorization", "") + req["headers"].get("x-api-key", "")
        assert "sk-test-SECRET-0123456789" in sent  # the key reaches the server ...
        if provider == "anthropic":
            assert req["body"]["system"] == "you are terse"
        else:
            assert req["body"]["messages"][0] == {"role": "system", "content": "you are terse"}
    (row,) = archive.llm_calls()
    assert row["ok"] == 1 and row["response"] == "the answer" and row["role"] == "proposer"
    assert row["tokens_in"] == r.tokens_in and row["model"].startswith(provider + ":fake-model@http://127.0.0.1")
    assert "SECRET" not in str(row)  # ... and never the archive
    assert b"SECRET" not in (archive.path.read_bytes() + archive.path.with_name("archive.db-wal").read_bytes())


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_rate_limits_are_retried_honouring_retry_after(provider, archive):
    waits = []
    with FakeLLM(lambda p, b: Answer("ok")) as srv:
        srv.queue = [Answer(status=429, error="slow down", headers={"retry-after-ms": "20"}),
                     Answer(status=503, error="overloaded")]
        llm = LLM(ModelSpec.parse(srv.spec(provider)), FAST, Budget(), archive, on_retry=waits.append)
        r = llm.chat("implementer", "s", MSG, key="q")
    assert r.text == "ok" and r.attempts == 3 and len(srv.requests) == 3
    assert "rate limit" in waits[0] and "in 0.0 s" in waits[0]  # the Retry-After of 20 ms was used
    assert "server" in waits[1]
    assert archive.llm_calls()[0]["attempts"] == 3


def test_retries_give_up_with_a_clear_error_and_a_record(archive):
    with FakeLLM(lambda p, b: Answer(status=500, error="boom")) as srv:
        llm = LLM(ModelSpec.parse(srv.spec()), FAST, Budget(), archive)
        with pytest.raises(LLMError, match=r"server error 500.*after 4 tries") as e:
            llm.chat("proposer", "s", MSG, key="q")
    assert e.value.kind == "server" and len(srv.requests) == 4
    (row,) = archive.llm_calls()
    assert row["ok"] == 0 and "500" in row["error"] and row["attempts"] == 4


def test_a_timeout_is_retried_then_reported(archive):
    cfg = LLMConfig(timeout_s=0.3, max_retries=1, backoff_s=0.01)
    with FakeLLM(lambda p, b: Answer("late", delay_s=1.0)) as srv:
        llm = LLM(ModelSpec.parse(srv.spec()), cfg, Budget(), archive)
        with pytest.raises(LLMError, match="no answer within 0.3 s") as e:
            llm.chat("reflector", "s", MSG, key="q")
    assert e.value.kind == "timeout" and len(srv.requests) == 2


def test_a_refused_key_fails_at_once(archive):
    with FakeLLM(lambda p, b: Answer(status=401, error="invalid key")) as srv:
        llm = LLM(ModelSpec.parse(srv.spec()), FAST, Budget(), archive)
        with pytest.raises(LLMError, match="refused the key.*OPENAI_API_KEY"):
            llm.chat("proposer", "s", MSG, key="q")
    assert len(srv.requests) == 1


def test_max_tokens_falls_back_to_max_completion_tokens(archive):
    def respond(p, body):
        if "max_tokens" in body:
            return Answer(status=400, error="Unsupported parameter: 'max_tokens'; use 'max_completion_tokens'")
        return Answer("fine")
    with FakeLLM(respond) as srv:
        llm = LLM(ModelSpec.parse(srv.spec()), FAST, Budget(), archive)
        assert llm.chat("proposer", "s", MSG, key="q").text == "fine"
        assert llm.chat("proposer", "s", MSG, key="q2").text == "fine"
    assert [("max_tokens" in r["body"]) for r in srv.requests] == [True, False, False]


def test_the_budget_stops_new_calls(archive):
    with FakeLLM(lambda p, b: Answer("x" * 400)) as srv:
        budget = Budget(max_tokens=50)
        llm = LLM(ModelSpec.parse(srv.spec()), FAST, budget, archive)
        llm.chat("proposer", "s", MSG, key="a")  # ~100 tokens: goes over during the call
        with pytest.raises(BudgetExhausted, match="token budget spent"):
            llm.chat("proposer", "s", MSG, key="b")
        assert len(srv.requests) == 1  # the refused call never reached the server
        assert archive.llm_spent()[0] == budget.spent_tokens > 50


def test_a_dollar_budget_needs_a_price():
    with pytest.raises(ValueError, match="--llm-price"):
        LLM(ModelSpec.parse("openai:gpt-x"), FAST, Budget(max_usd=1.0))
    llm = LLM(ModelSpec.parse("openai:gpt-x"), LLMConfig(price=(2.0, 8.0)), Budget(max_usd=1.0))
    assert llm.cost(1_000_000, 500_000) == pytest.approx(6.0)
    assert LLM(ModelSpec.parse("openai:gpt-x")).cost(10, 10) is None  # unknown, not free


def test_the_cache_answers_a_resumed_run_without_paying(tmp_path):
    path = tmp_path / "archive.db"
    with FakeLLM(lambda p, b: Answer(f"answer {len(srv.requests)}")) as srv:
        with Archive(path) as a:
            llm = LLM(ModelSpec.parse(srv.spec()), FAST, Budget(), a)
            first = llm.chat("proposer", "s", MSG, key="round1").text
            assert llm.chat("proposer", "s", MSG, key="round2").text != first  # another place, another question
        with Archive(path) as a:  # the resumed run: a new client, the same archive
            llm = LLM(ModelSpec.parse(srv.spec()), FAST, Budget(*(None, None), *a.llm_spent()), a)
            r = llm.chat("proposer", "s", MSG, key="round1")
            assert r.cached and r.text == first and r.tokens_in == 0
            assert len(srv.requests) == 2
            rows = a.llm_calls()
            assert [x["cached"] for x in rows] == [0, 0, 1]
            assert a.llm_spent()[0] == sum(x["tokens_in"] + x["tokens_out"] for x in rows[:2])


def test_redact_hides_key_values(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-abcdefgh1234")
    assert redact("echo tok-abcdefgh1234 back") == "echo *** back"
