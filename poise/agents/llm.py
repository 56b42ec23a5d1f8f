"""LLM clients for the agents: OpenAI-compatible chat completions and Anthropic messages, through the
official SDKs, with the things a long unattended run needs around them.

    spec = ModelSpec.parse("openai:gpt-4.1-mini")                      # OpenAI
    spec = ModelSpec.parse("anthropic:claude-sonnet-4-5")               # Anthropic
    spec = ModelSpec.parse("openai:Qwen/Qwen2.5-7B-Instruct@http://localhost:8000/v1")   # vLLM, SGLang,
                                                                        # Ollama, llama.cpp, LM Studio, ...
    llm = LLM(spec, LLMConfig(), Budget(max_tokens=2_000_000), ledger=archive)
    reply = llm.chat("proposer", system, [{"role": "user", "content": "..."}], key="propose/round3")

- **Keys** come only from the environment (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, or the variable
  named by ``key_env``). They are never written anywhere: records hold the model and the messages, and
  every text recorded passes through ``redact``. A server given by URL with no key set gets a
  placeholder, since local servers ignore it.
- **Retries**: rate limits (429), timeouts, dropped connections and server errors (408, 409, 5xx) are
  retried with exponential backoff, honouring ``Retry-After``; each wait is reported (``on_retry``) so a
  stalled provider is visible, not silent. Other errors (bad key, unknown model) fail at once with
  a message naming the fix. The SDKs' own retries are off so that this is the one retry policy.
- **Budget**: tokens and dollars over the whole run (resumed runs included: spending is summed from
  the archive). When spent, the next call raises `BudgetExhausted` and the loop stops proposing.
  Dollars need a price: given with ``price`` ($ per million input and output tokens); an unknown
  price with a dollar budget is refused up front rather than counted as free.
- **Cache**: every call is recorded in the archive's ``llm_calls`` table under a key made of the
  model, the settings, the messages and the caller's key (role, round, entry, attempt). A resumed run
  asking the same question at the same point gets the recorded answer and pays nothing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol
from urllib.parse import urlsplit, urlunsplit

PROVIDERS = ("openai", "anthropic")
KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
_RETRY_STATUS = {408, 409, 429}
_SPEC = re.compile(r"^(?:(?P<provider>[a-z]+):)?(?P<model>[^@\s]+?)(?:@(?P<url>https?://\S+))?$")


class LLMError(RuntimeError):
    """A call that did not produce an answer; ``kind`` says why (timeout, rate_limit, server, auth, ...)."""

    retry_after: float | None = None  # seconds the server asked to wait (set by _status_error)

    def __init__(self, message: str, kind: str = "error"):
        super().__init__(message)
        self.kind = kind


class BudgetExhausted(LLMError):
    def __init__(self, message: str):
        super().__init__(message, "budget")


@dataclass(frozen=True)
class ModelSpec:
    provider: str  # "openai" (any OpenAI-compatible server) | "anthropic"
    model: str
    base_url: str | None = None
    key_env: str | None = None  # the environment variable that holds the key; None: the provider's default

    @classmethod
    def parse(cls, text: str, key_env: str | None = None) -> "ModelSpec":
        """``[provider:]model[@base_url]``. Without a provider, models named claude* go to Anthropic and
        everything else to an OpenAI-compatible endpoint."""
        m = _SPEC.match(text.strip())
        if not m:
            raise ValueError(f"--llm {text!r}: expected [provider:]model[@base_url], e.g. openai:gpt-4.1-mini, "
                             f"anthropic:claude-sonnet-4-5 or openai:my-model@http://localhost:8000/v1")
        provider = m.group("provider") or ("anthropic" if m.group("model").startswith("claude") else "openai")
        if provider not in PROVIDERS:
            raise ValueError(f"--llm {text!r}: unknown provider {provider!r}; use one of {', '.join(PROVIDERS)} "
                             f"(vLLM, SGLang, Ollama, llama.cpp and most servers speak openai)")
        return cls(provider, m.group("model"), m.group("url"), key_env)

    @property
    def label(self) -> str:
        """How the model is named in records and reports: no key, no credentials in the URL."""
        return f"{self.provider}:{self.model}" + (f"@{safe_url(self.base_url)}" if self.base_url else "")

    @property
    def is_local(self) -> bool:
        if not self.base_url:
            return False
        return _is_local_host(urlsplit(self.base_url).hostname or "")

    def api_key(self) -> str:
        var = self.key_env or KEY_ENV[self.provider]
        key = os.environ.get(var, "").strip()
        if key:
            return key
        if self.base_url:
            return "not-needed"  # self-hosted servers mostly take any key
        raise LLMError(f"{self.provider} needs an API key: set {var} in the environment (poise reads keys only "
                       f"from there, and never writes them), or point --llm at a server with @URL", "auth")


def _is_local_host(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def safe_url(url: str | None) -> str:
    """The URL without user:password and query (where keys sometimes travel)."""
    if not url:
        return ""
    p = urlsplit(url)
    host = p.hostname or ""
    netloc = host + (f":{p.port}" if p.port else "")
    return urlunsplit((p.scheme, netloc, p.path, "", ""))


def redact(text: str) -> str:
    """Replace the values of every key-like environment variable in ``text`` with ***."""
    for var, val in os.environ.items():
        if len(val) >= 8 and any(s in var.upper() for s in ("KEY", "TOKEN", "SECRET")) and val in text:
            text = text.replace(val, "***")
    return text


def price_of(spec: ModelSpec, price: tuple[float, float] | None) -> tuple[float, float] | None:
    """$ per million (input, output) tokens: the one given, else 0 for a loopback server, else unknown."""
    if price is not None:
        return price
    return (0.0, 0.0) if spec.is_local else None


def check_priced(spec: ModelSpec, price: tuple[float, float] | None, max_usd: float | None) -> None:
    """A dollar budget needs a known price: an unknown one is never counted as free."""
    if max_usd is not None and price_of(spec, price) is None:
        raise ValueError(f"--llm-budget-usd needs the price of {spec.label}: pass --llm-price IN,OUT ($ per million "
                         f"input and output tokens), or cap tokens with --llm-budget-tokens; an unknown price is "
                         f"never counted as free")


@dataclass
class LLMConfig:
    timeout_s: float = 120.0  # one HTTP request
    max_retries: int = 4  # after the first try, on rate limits, timeouts and server errors
    backoff_s: float = 2.0  # the first wait; doubles each retry, with jitter
    max_wait_s: float = 60.0  # no single wait is longer (a Retry-After of an hour is capped)
    max_tokens: int = 2048  # per answer
    price: tuple[float, float] | None = None  # $ per million (input, output) tokens; None: unknown (0 if local)


@dataclass
class Budget:
    """Spending cap for the run. ``spent_*`` start from what the archive already recorded."""

    max_tokens: int | None = None
    max_usd: float | None = None
    spent_tokens: int = 0
    spent_usd: float = 0.0

    def check(self) -> None:
        if self.max_tokens is not None and self.spent_tokens >= self.max_tokens:
            raise BudgetExhausted(f"LLM token budget spent ({self.spent_tokens:,} of {self.max_tokens:,} tokens); "
                                  f"raise --llm-budget-tokens and --resume to continue")
        if self.max_usd is not None and self.spent_usd >= self.max_usd:
            raise BudgetExhausted(f"LLM budget spent (${self.spent_usd:.2f} of ${self.max_usd:.2f}); raise "
                                  f"--llm-budget-usd and --resume to continue")

    def charge(self, tokens: int, usd: float | None) -> None:
        self.spent_tokens += tokens
        self.spent_usd += usd or 0.0

    def describe(self) -> str:
        parts = [f"{self.spent_tokens:,} tokens" + (f" of {self.max_tokens:,}" if self.max_tokens else "")]
        if self.spent_usd or self.max_usd:
            parts.append(f"${self.spent_usd:.3f}" + (f" of ${self.max_usd:.2f}" if self.max_usd else ""))
        return ", ".join(parts)


class Ledger(Protocol):
    """Where calls are recorded and looked up: the run's `Archive`."""

    def add_llm_call(self, **row: Any) -> int: ...
    def llm_cached(self, cache_key: str) -> dict | None: ...


@dataclass
class Reply:
    text: str
    tokens_in: int
    tokens_out: int
    cost_usd: float | None
    latency_s: float
    attempts: int
    cached: bool = False
    model: str = ""


@dataclass
class LLM:
    """One model endpoint. ``chat`` is the only call the agents make."""

    spec: ModelSpec
    cfg: LLMConfig = field(default_factory=LLMConfig)
    budget: Budget = field(default_factory=Budget)
    ledger: Ledger | None = None
    on_retry: Callable[[str], None] | None = None  # told "rate limited, retrying in 4.0 s" and the like
    _client: Any = field(default=None, repr=False)
    _token_param: str = field(default="max_tokens", repr=False)

    def __post_init__(self):
        check_priced(self.spec, self.cfg.price, self.budget.max_usd)

    def price(self) -> tuple[float, float] | None:
        return price_of(self.spec, self.cfg.price)

    def cost(self, tokens_in: int, tokens_out: int) -> float | None:
        p = self.price()
        return None if p is None else (tokens_in * p[0] + tokens_out * p[1]) / 1e6

    # -- the call ------------------------------------------------------------------------------------
    def chat(self, role: str, system: str, messages: list[dict], *, key: str, entry_id: int | None = None,
             temperature: float = 0.7, max_tokens: int | None = None) -> Reply:
        """Ask; return the answer text. ``key`` names the question's place in the run (for the cache)."""
        max_tokens = max_tokens or self.cfg.max_tokens
        ckey = cache_key(self.spec, system, messages, key, temperature, max_tokens)
        prompt = redact(json.dumps([{"role": "system", "content": system}] + list(messages)))
        hit = self.ledger.llm_cached(ckey) if self.ledger is not None else None
        if hit is not None:
            self._record(entry_id, role, ckey, prompt, hit["response"], 0, 0, 0.0, 0.0, 0, cached=True)
            return Reply(hit["response"], 0, 0, 0.0, 0.0, 0, cached=True, model=self.spec.label)
        self.budget.check()
        t0, attempts = time.monotonic(), 0
        while True:
            attempts += 1
            try:
                text, tin, tout = self._call(system, messages, temperature, max_tokens)
                break
            except LLMError as e:
                wait = getattr(e, "retry_after", None)
                if e.kind not in ("rate_limit", "timeout", "connection", "server") or attempts > self.cfg.max_retries:
                    latency = time.monotonic() - t0
                    msg = redact(str(e)) + (f" (after {attempts} tries)" if attempts > 1 else "")
                    self._record(entry_id, role, ckey, prompt, "", 0, 0, 0.0, latency, attempts, ok=False, error=msg)
                    raise LLMError(msg, e.kind) from None
                delay = min(self.cfg.max_wait_s, wait if wait is not None else
                            self.cfg.backoff_s * 2 ** (attempts - 1) * (0.5 + random.random()))
                if self.on_retry is not None:
                    self.on_retry(f"{self.spec.label}: {e.kind.replace('_', ' ')} ({redact(str(e))[:120]}); "
                                  f"retry {attempts}/{self.cfg.max_retries} in {delay:.1f} s")
                time.sleep(delay)
        latency = time.monotonic() - t0
        cost = self.cost(tin, tout)
        self.budget.charge(tin + tout, cost)
        text = redact(text)
        self._record(entry_id, role, ckey, prompt, text, tin, tout, cost, latency, attempts)
        return Reply(text, tin, tout, cost, latency, attempts, model=self.spec.label)

    def _record(self, entry_id, role, ckey, prompt, response, tin, tout, cost, latency, attempts, cached=False,
                ok=True, error="") -> None:
        if self.ledger is None:
            return
        self.ledger.add_llm_call(entry_id=entry_id, role=role, provider=self.spec.provider, model=self.spec.label,
                                 cache_key=ckey, prompt=prompt, response=response, tokens_in=tin, tokens_out=tout,
                                 cost_usd=cost, latency_s=round(latency, 3), attempts=attempts, cached=int(cached),
                                 ok=int(ok), error=error)

    # -- the providers -------------------------------------------------------------------------------
    def _sdk(self):
        if self._client is not None:
            return self._client
        try:
            if self.spec.provider == "openai":
                import openai as sdk
                self._client = sdk.OpenAI(api_key=self.spec.api_key(), base_url=self.spec.base_url,
                                          timeout=self.cfg.timeout_s, max_retries=0)
            else:
                import anthropic as sdk
                self._client = sdk.Anthropic(api_key=self.spec.api_key(), base_url=self.spec.base_url,
                                             timeout=self.cfg.timeout_s, max_retries=0)
        except ImportError:
            raise LLMError(f"the {self.spec.provider} SDK is not installed: pip install 'poise[llm]'", "setup") from None
        return self._client

    def _call(self, system: str, messages: list[dict], temperature: float, max_tokens: int) -> tuple[str, int, int]:
        client = self._sdk()
        sdk = __import__(self.spec.provider)
        try:
            if self.spec.provider == "openai":
                return self._openai(client, system, messages, temperature, max_tokens)
            # no temperature: current Anthropic models and SDKs no longer take sampling parameters
            r = client.messages.create(model=self.spec.model, system=system, messages=messages, max_tokens=max_tokens)
            text = "".join(getattr(b, "text", "") for b in r.content)
            return text, int(r.usage.input_tokens or 0), int(r.usage.output_tokens or 0)
        except sdk.APITimeoutError as e:
            raise LLMError(f"no answer within {self.cfg.timeout_s:g} s", "timeout") from e
        except sdk.APIConnectionError as e:
            raise LLMError(f"cannot reach {safe_url(self.spec.base_url) or self.spec.provider}: {e}", "connection") from e
        except sdk.APIStatusError as e:
            raise _status_error(e, self.spec) from e

    def _openai(self, client, system, messages, temperature, max_tokens) -> tuple[str, int, int]:
        import openai
        kw = {"model": self.spec.model, "messages": [{"role": "system", "content": system}] + list(messages),
              "temperature": temperature, self._token_param: max_tokens}
        try:
            r = client.chat.completions.create(**kw)
        except openai.BadRequestError as e:
            # newer OpenAI models take max_completion_tokens and refuse max_tokens; older servers the reverse
            if self._token_param == "max_tokens" and "max_tokens" in str(e):
                self._token_param = "max_completion_tokens"
                return self._openai(client, system, messages, temperature, max_tokens)
            raise
        if not r.choices:
            raise LLMError("the server answered with no choices", "server")
        text = r.choices[0].message.content or ""
        u = r.usage
        return text, int(getattr(u, "prompt_tokens", 0) or 0), int(getattr(u, "completion_tokens", 0) or 0)


def _status_error(e, spec: ModelSpec) -> LLMError:
    code = int(getattr(e, "status_code", 0) or 0)
    body = redact(str(getattr(e, "message", "") or e))[:300]
    if code == 429:
        err = LLMError(f"rate limited (429): {body}", "rate_limit")
    elif code in _RETRY_STATUS or code >= 500:
        err = LLMError(f"server error {code}: {body}", "server")
    elif code in (401, 403):
        var = spec.key_env or KEY_ENV[spec.provider]
        return LLMError(f"{spec.label} refused the key ({code}): check {var}", "auth")
    elif code == 404:
        return LLMError(f"{spec.label}: not found (404): {body}; check the model name and the base URL", "not_found")
    else:
        return LLMError(f"{spec.label} rejected the request ({code}): {body}", "bad_request")
    err.retry_after = _retry_after(getattr(e, "response", None))
    return err


def _retry_after(response) -> float | None:
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        v = headers.get(name)
        if v is not None:
            try:
                return max(0.0, float(v) * scale)
            except ValueError:
                return None
    return None


def cache_key(spec: ModelSpec, system: str, messages: list[dict], key: str, temperature: float,
              max_tokens: int) -> str:
    blob = json.dumps([spec.provider, spec.model, key, temperature, max_tokens, system, messages], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def usage_by_role(calls: list[dict]) -> dict[str, dict]:
    """Sum recorded calls (``Archive.llm_calls()``) per role, plus "total": paid calls, answers from the cache,
    failed calls, tokens in and out, dollars (None when a price is unknown) and seconds."""
    out: dict[str, dict] = {}
    for c in calls:
        for key in (c["role"], "total"):
            u = out.setdefault(key, {"calls": 0, "cached": 0, "failed": 0, "tokens_in": 0, "tokens_out": 0,
                                     "usd": 0.0, "price_known": True, "seconds": 0.0})
            u["cached"] += c["cached"]
            u["calls"] += 1 - c["cached"]
            u["failed"] += 1 - c["ok"]
            u["tokens_in"] += c["tokens_in"]
            u["tokens_out"] += c["tokens_out"]
            u["seconds"] += c["latency_s"]
            if c["cost_usd"] is None and not c["cached"]:
                u["price_known"] = False
            u["usd"] += c["cost_usd"] or 0.0
    return out
