"""A checkpoint served over loopback HTTP the way vLLM serves one: `/v1/chat/completions` with greedy generation,
`logprobs` / `top_logprobs` (each token's text, bytes and log-probability, and its top alternatives), and
`continue_final_message` with `add_generation_prompt: false` (the assistant's last message continued). The model is
the real checkpoint, run with transformers; `prefix` makes every reply begin with that text, as guided decoding
would (its tokens are scored like the rest), and `levels` lets it write only one of those after the prefix (guided
decoding; the log-probabilities stay the model's own), so an untrained tiny model writes a judgment to read."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path

from PIL import Image

from tests.loopback import JsonHandler, _Server


class ServedModel:
    def __init__(
        self, path: Path, *, name: str = "served-guard", prefix: str = "", levels: tuple[str, ...] = ()
    ) -> None:
        import torch
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        from qta.loading import choose_placement, load_model, load_processor

        self.name, self.prefix, self.levels = name, prefix, levels  # levels: guided decoding after the prefix
        self.processor = load_processor(path)
        self.tokenizer = self.processor.tokenizer
        self.model = load_model(path, choose_placement("cpu", "float32"))
        self.torch = torch
        self._byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
        self._texts = [self.tokenizer.decode([i]) for i in range(len(self.tokenizer))]
        self._lock = threading.Lock()
        self.requests: list[dict] = []
        self.prompts: list[str] = []  # each request's rendered prompt (the continued message included)
        served = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    status, payload = 404, {"error": {"message": f"no route {self.path}"}}
                else:
                    with served._lock:
                        served.requests.append(body)
                        status, payload = 200, served.complete(body)
                self._send(status, payload)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ServedModel:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- one completion ---------------------------------------------------------------------------------------------
    def _render(self, messages: list[dict], *, generation_prompt: bool) -> tuple[str, list]:
        converted, images = [], []
        for message in messages:
            content = message["content"]
            if isinstance(content, str):
                converted.append({"role": message["role"], "content": content})
                continue
            parts = []
            for part in content:
                if part["type"] == "image_url":
                    raw = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                    images.append(Image.open(io.BytesIO(raw)).convert("RGB"))
                    parts.append({"type": "image"})
                else:
                    parts.append(part)
            converted.append({"role": message["role"], "content": parts})
        text = self.processor.apply_chat_template(
            converted, tokenize=False, add_generation_prompt=generation_prompt
        )
        return text, images

    def _inputs(self, inputs, reply: list[int], start: int) -> dict:
        """The processed prompt with the reply so far in place of its forced tail (image inputs kept)."""
        torch = self.torch
        ids = torch.cat([inputs["input_ids"][:, :start], torch.tensor([reply], dtype=torch.long)], 1)
        out = {**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if "mm_token_type_ids" in inputs:
            types = inputs["mm_token_type_ids"][:, :start]
            out["mm_token_type_ids"] = torch.cat([types, torch.zeros((1, len(reply)), dtype=types.dtype)], 1)
        return out

    def _bytes(self, token_id: int) -> list[int]:
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if all(char in self._byte_of for char in piece):
            return [self._byte_of[char] for char in piece]
        return list(piece.encode())  # a special token, written as itself

    def _entry(self, token_id: int, logprobs, top: int) -> dict:
        best = self.torch.topk(logprobs, top)
        return {
            "token": self.tokenizer.decode([token_id]),
            "logprob": float(logprobs[token_id]),
            "bytes": self._bytes(token_id),
            "top_logprobs": [
                {"token": self.tokenizer.decode([i]), "logprob": float(lp), "bytes": self._bytes(i)}
                for lp, i in zip(best.values.tolist(), best.indices.tolist(), strict=True)
            ],
        }

    def complete(self, body: dict) -> dict:
        torch = self.torch
        messages = body["messages"]
        if body.get("continue_final_message"):
            prompt, images = self._render(messages[:-1], generation_prompt=True)
            prompt += messages[-1]["content"]
            forced = ""
        else:
            prompt, images = self._render(messages, generation_prompt=body.get("add_generation_prompt", True))
            forced = self.prefix
        self.prompts.append(prompt)
        kwargs = {"images": images or None, "return_tensors": "pt"}
        start = self.processor(text=[prompt], **kwargs)["input_ids"].shape[1]
        inputs = self.processor(text=[prompt + forced], **kwargs)
        eos = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        reply = inputs["input_ids"][0, start:].tolist()  # the forced prefix's tokens, then the generated ones
        constrained = self.levels if forced else ()
        written = ""
        with torch.inference_mode():
            for _ in range(int(body.get("max_tokens") or 16)):
                logits = self.model(**self._inputs(inputs, reply, start)).logits[0, -1]
                if constrained:  # guided decoding: only what spells a level, then the stop token
                    allowed = [
                        i
                        for i, text in enumerate(self._texts)
                        if text and any(level.startswith(written + text) for level in constrained)
                    ]
                    allowed += [eos] if written in constrained else []  # fmt: skip
                    token = max(allowed, key=lambda i: float(logits[i]))
                else:
                    token = int(logits.argmax())
                reply.append(token)
                if token == eos:
                    break
                written += self._texts[token]
            full = self.model(**self._inputs(inputs, reply, start)).logits[0]
            logits = full if reply else None
        text = self.tokenizer.decode([t for t in reply if t != eos], skip_special_tokens=True)
        choice: dict = {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": text},
        }
        if body.get("logprobs") and logits is not None:
            top = min(int(body.get("top_logprobs") or 0), len(self._texts)) or 1  # vLLM: up to --max-logprobs
            rows = torch.log_softmax(logits[start - 1 : start - 1 + len(reply)].float(), dim=-1)
            choice["logprobs"] = {"content": [self._entry(t, rows[k], top) for k, t in enumerate(reply)]}
        return {
            "id": "cmpl-served", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [choice],
            "usage": {"prompt_tokens": start, "completion_tokens": len(reply), "total_tokens": start + len(reply)},
        }  # fmt: skip
