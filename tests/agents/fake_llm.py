"""A real HTTP server on loopback that speaks the OpenAI chat-completions and Anthropic messages
protocols, with scripted answers: the clients under test talk to it through their official SDKs.

    with FakeLLM(responder) as srv:          # srv.url: http://127.0.0.1:PORT
        ...                                  # srv.requests: every request (path, headers, body)

``responder(provider, body) -> Answer`` decides each answer; ``srv.queue`` holds answers that are
served first, in order (for rate limits, errors, timeouts).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Answer:
    text: str = ""
    status: int = 200
    headers: dict = field(default_factory=dict)
    error: str = ""  # the error message for a non-200 status
    delay_s: float = 0.0  # sleep before answering (for timeouts)


def _tokens(s: str) -> int:
    return max(1, len(s) // 4)


class FakeLLM:
    def __init__(self, responder: Callable[[str, dict], Answer] | None = None):
        self.responder = responder or (lambda provider, body: Answer("hello"))
        self.queue: list[Answer] = []
        self.requests: list[dict] = []
        self.fixed_usage: tuple[int, int] | None = None  # (input, output) tokens reported for every answer
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                provider = "anthropic" if self.path.rstrip("/").endswith("/messages") else "openai"
                with fake._lock:
                    fake.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                                          "provider": provider})
                    ans = fake.queue.pop(0) if fake.queue else None
                if ans is None:
                    ans = fake.responder(provider, body)
                if ans.delay_s:
                    time.sleep(ans.delay_s)
                if ans.status != 200:
                    payload = ({"type": "error", "error": {"type": "api_error", "message": ans.error or "error"}}
                               if provider == "anthropic" else
                               {"error": {"message": ans.error or "error", "type": "api_error", "code": ans.status}})
                else:
                    prompt = json.dumps(body.get("messages", [])) + str(body.get("system", ""))
                    tin, tout = fake.fixed_usage or (_tokens(prompt), _tokens(ans.text))
                    if provider == "anthropic":
                        payload = {"id": "msg_1", "type": "message", "role": "assistant", "model": body.get("model"),
                                   "content": [{"type": "text", "text": ans.text}], "stop_reason": "end_turn",
                                   "stop_sequence": None, "usage": {"input_tokens": tin, "output_tokens": tout}}
                    else:
                        payload = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                                   "model": body.get("model"), "choices": [{"index": 0, "finish_reason": "stop",
                                   "message": {"role": "assistant", "content": ans.text}}],
                                   "usage": {"prompt_tokens": tin, "completion_tokens": tout,
                                             "total_tokens": tin + tout}}
                data = json.dumps(payload).encode()
                try:
                    self.send_response(ans.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in ans.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeLLM":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def spec(self, provider: str = "openai", model: str = "fake-model") -> str:
        return f"{provider}:{model}@{self.url}" + ("/v1" if provider == "openai" else "")


# ---------------------------------------------------------------------------------------------------
# A scripted research team: good answers for each role, recognised by its system prompt


def role_of(provider: str, body: dict) -> str:
    system = body.get("system") if provider == "anthropic" else body["messages"][0]["content"]
    system = system if isinstance(system, str) else json.dumps(system)
    for key, role in (("designs reinforcement-learning", "proposer"), ("research engineer", "implementer"),
                      ("reviewer of research code", "verifier"), ("analysing an RL training run", "reflector")):
        if key in system:
            return role
    return "unknown"


def last_user(provider: str, body: dict) -> str:
    msgs = [m for m in body["messages"] if m["role"] == "user"]
    c = msgs[-1]["content"]
    return c if isinstance(c, str) else " ".join(b.get("text", "") for b in c)


def good_team(codes: dict[str, str], names: list[str] | None = None) -> Callable[[str, dict], Answer]:
    """Answers every role well: the proposer proposes ``names`` (rotating), the implementer answers with
    ``codes[name]`` for the proposal named in its prompt, the verifier says match, the reflector diagnoses."""
    names = names or list(codes)
    state = {"round": 0}

    def respond(provider: str, body: dict) -> Answer:
        role, user = role_of(provider, body), last_user(provider, body)
        if role == "proposer":
            n = int(re.search(r"Propose (\d+) new", user).group(1)) if re.search(r"Propose (\d+) new", user) else 1
            items = []
            for _ in range(n):
                name = names[state["round"] % len(names)]
                state["round"] += 1
                items.append({"name": name, "hypothesis": f"{name} should help: the evidence says so",
                              "mechanism": f"{name}'s mechanism", "math": "A_i = (r_i - mean) / sd",
                              "expected_dynamics": "steadier reward", "claims": ["correct_above_wrong", "bogus_claim"],
                              "builds_on": [0]})
            return Answer("Here are my ideas.\n```json\n" + json.dumps(items) + "\n```")
        if role == "implementer":
            all_text = json.dumps(body["messages"])
            for name, code in codes.items():
                if f"The proposal to implement: {name}" in all_text:
                    return Answer(f"Here is the module.\n```python\n{code}\n```\nDone.")
            return Answer("I am not sure.")
        if role == "verifier":
            return Answer('```json\n{"verdict": "match", "reasons": []}\n```')
        if role == "reflector":
            return Answer('{"diagnosis": "The reward rose steadily because the scale kept the signal alive.", '
                          '"verdict": "keep", "worked": ["scale"], "failed": [], '
                          '"suggestions": ["try a leave-one-out baseline"]}')
        return Answer("?")

    return respond
