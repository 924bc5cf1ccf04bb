"""A real OpenAI-compatible HTTP server on loopback, standing in for vLLM / SGLang / a hosted API in tests.

It speaks `POST /v1/chat/completions` over real HTTP (keep-alive, as vLLM does); what it answers is decided by
`respond(body)` (which sees the model name, so one server can play several jurors; a dict is the whole reply message), and faults are injected on the
server side, as a real server would fail: a status code, "timeout" (answer only after `hang_s`), or "unparseable"
(a 200 whose text has no judgment). `faults` serves the first requests in order; `fault_for(body)` decides per
request after that. `GET /v1/models` lists `models` (404 when None, as on a server without the listing); `faults`
serve it too.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

from tests.processes import free_port


def user_text(body: dict) -> str:
    return " ".join(
        part.get("text", "") for m in body["messages"] if m["role"] == "user" for part in m["content"]
    )


def keyword_judge(body: dict) -> str:
    """Judges like a (very simple) guard: 1 when the user turn mentions 'steps', else 0."""
    judgment = "1" if "steps" in user_text(body).lower() else "0"
    return f"**Analysis:** The reasoning was read.\n**Judgment:** {judgment}"


Fault = int | str


def by_model(answers: dict[str, str | Callable[[dict], str]]) -> Callable[[dict], str]:
    """A respond() that answers per model name: a fixed text, or a function of the request."""

    def respond(body: dict) -> str:
        answer = answers[body["model"]]
        return answer if isinstance(answer, str) else answer(body)

    return respond


class _Server(ThreadingHTTPServer):
    # A model server accepts many connections at once (vLLM's listen backlog is in the thousands); the standard
    # library's 5 would reset a client that opens its 32 connections together.
    request_queue_size = 1024
    daemon_threads = True


class JsonHandler(BaseHTTPRequestHandler):
    """A loopback server's request handler: keep-alive, JSON answers, nothing logged."""

    protocol_version = "HTTP/1.1"  # keep-alive: one connection per client thread, as with a real server
    # Headers and body go out as two writes; with Nagle's algorithm on, the body would wait for the client's
    # delayed ACK (~40 ms a reply). Real servers (uvicorn under vLLM) set TCP_NODELAY, so this one does too.
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class LoopbackOpenAI:
    def __init__(
        self, respond: Callable[[dict], str] = keyword_judge, *, faults: list[Fault] | None = None,
        delay_s: float = 0.0, fault_for: Callable[[dict], Fault | None] | None = None, hang_s: float = 5.0,
        models: list[str] | None = None,
    ):  # fmt: skip
        self.respond = respond
        self.faults = list(faults or [])
        self.fault_for = fault_for
        self.hang_s = hang_s
        self.delay_s = delay_s
        self.models = models
        self.listings = 0  # GET /v1/models requests received
        self.requests: list[dict] = []
        self.authorizations: list[str | None] = []  # the Authorization header of each request
        self.images: list[tuple[int, int]] = []  # decoded sizes of the images received
        self._lock = threading.Lock()
        server = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.listings += 1
                    server.authorizations.append(self.headers.get("Authorization"))
                    fault = server.faults.pop(0) if server.faults else None
                if fault == "timeout":
                    time.sleep(server.hang_s)
                elif isinstance(fault, int):
                    self._send(fault, {"error": {"message": f"injected {fault}"}})
                elif self.path != "/v1/models" or server.models is None:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                else:
                    data = [{"id": name, "object": "model", "owned_by": "loopback"} for name in server.models]
                    self._send(200, {"object": "list", "data": data})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append(body)
                    server.authorizations.append(self.headers.get("Authorization"))
                    fault = server.faults.pop(0) if server.faults else None
                if fault is None and server.fault_for is not None:
                    fault = server.fault_for(body)
                if server.delay_s:
                    time.sleep(server.delay_s)
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if fault == "timeout":
                    time.sleep(server.hang_s)  # the client gives up first
                elif isinstance(fault, int):
                    self._send(fault, {"error": {"message": f"injected {fault}"}})
                    return
                for message in body["messages"]:
                    for part in message["content"] if isinstance(message["content"], list) else []:
                        if part.get("type") == "image_url":
                            encoded = part["image_url"]["url"].split(",", 1)[1]
                            with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
                                server.images.append(image.size)
                reply = "I would rather not say." if fault == "unparseable" else server.respond(body)
                # A dict is the whole message (a reasoning model's separate reasoning field, say).
                message = (
                    {"role": "assistant", **reply}
                    if isinstance(reply, dict)
                    else {"role": "assistant", "content": reply}
                )
                self._send(200, {
                    "id": "cmpl-1", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": message}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 12, "total_tokens": 112},
                })  # fmt: skip

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        # A client that gave up on a "timeout" fault has closed its socket: nothing to report.
        self.httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> LoopbackOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}/v1"
