"""A real OpenAI-compatible HTTP server on loopback, standing in for vLLM / SGLang / a hosted API in tests.

It speaks `POST /v1/chat/completions` over real HTTP; what it answers is decided by `respond(body)`, and faults
(status codes for the first requests, a delay) are injected on the server side, as a real server would fail.
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


def keyword_judge(body: dict) -> str:
    """Judges like a (very simple) guard: 1 when the user turn mentions 'steps', else 0."""
    text = " ".join(
        part.get("text", "") for m in body["messages"] if m["role"] == "user" for part in m["content"]
    )
    judgment = "1" if "steps" in text.lower() else "0"
    return f"**Analysis:** The reasoning was read.\n**Judgment:** {judgment}"


class LoopbackOpenAI:
    def __init__(self, respond: Callable[[dict], str] = keyword_judge, *, faults: list[int] | None = None,
                 delay_s: float = 0.0):  # fmt: skip
        self.respond = respond
        self.faults = list(faults or [])
        self.delay_s = delay_s
        self.requests: list[dict] = []
        self.images: list[tuple[int, int]] = []  # decoded sizes of the images received
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append(body)
                    fault = server.faults.pop(0) if server.faults else None
                if server.delay_s:
                    time.sleep(server.delay_s)
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if fault:
                    self._send(fault, {"error": {"message": f"injected {fault}"}})
                    return
                for message in body["messages"]:
                    for part in message["content"] if isinstance(message["content"], list) else []:
                        if part.get("type") == "image_url":
                            encoded = part["image_url"]["url"].split(",", 1)[1]
                            with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
                                server.images.append(image.size)
                text = server.respond(body)
                self._send(200, {
                    "id": "cmpl-1", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 12, "total_tokens": 112},
                })  # fmt: skip

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
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
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
