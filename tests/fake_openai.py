"""A small OpenAI-compatible server for tests: streamed completions and chat completions whose
tokens come after controlled delays, /v1/models and a Prometheus /metrics page; it counts a
prompt's tokens as its whitespace-separated words (as the synthetic prompts are built).

    with FakeOpenAI(first_token_s=0.05, token_s=0.01) as srv:
        srv.url        # http://127.0.0.1:<free port>
        srv.bodies     # the JSON bodies received

It can misbehave on demand: `usage` replaces fields of the usage object by raw JSON text
({"completion_tokens": '"3"'}, '-1', 'NaN', '1e400'); `cut_after` ends each stream after that many
tokens, with `cut` "clean" (the body ends properly, without [DONE]) or "abrupt" (the connection
closes mid-chunk); `models_raw` and `metrics_raw` are whole raw HTTP answers to /v1/models and
/metrics (bad framing, say).
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    def __init__(self, first_token_s: float = 0.05, token_s: float = 0.01, model: str = "test-model",
                 refuse_extra: bool = False, metrics: bool = True, usage: dict[str, str] | None = None,
                 cut_after: int | None = None, cut: str = "clean", models_raw: bytes | None = None,
                 metrics_raw: bytes | None = None):
        self.first_token_s, self.token_s, self.model = first_token_s, token_s, model
        self.refuse_extra, self.metrics = refuse_extra, metrics
        self.usage, self.cut_after, self.cut = usage or {}, cut_after, cut
        self.models_raw, self.metrics_raw = models_raw, metrics_raw
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0                  # requests streaming at once, at most
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _json(self, status: int, obj) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def _raw(self, data: bytes) -> None:
                self.wfile.write(data)
                self.wfile.flush()
                self.close_connection = True

            def do_GET(self):
                if self.path == "/v1/models" and fake.models_raw is not None:
                    self._raw(fake.models_raw)
                elif self.path == "/metrics" and fake.metrics_raw is not None:
                    self._raw(fake.metrics_raw)
                elif self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})
                elif self.path == "/metrics" and fake.metrics:
                    text = ("# HELP vllm:num_requests_running Running requests\n"
                            "# TYPE vllm:num_requests_running gauge\n"
                            f'vllm:num_requests_running{{model_name="{fake.model}"}} {fake.running}\n'
                            f'vllm:e2e_request_latency_seconds_bucket{{le="1.0"}} 3\n').encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.bodies.append(body)
                    fake.headers.append(dict(self.headers))
                chat = self.path == "/v1/chat/completions"
                if self.path not in ("/v1/completions", "/v1/chat/completions"):
                    return self._json(404, {"error": {"message": "not found"}})
                if fake.refuse_extra and ("ignore_eos" in body or "min_tokens" in body):
                    return self._json(400, {"error": {"message": "Unrecognized request argument: ignore_eos"}})
                prompt = body["messages"][-1]["content"] if chat else body["prompt"]
                n_in, n_out = len(prompt.split()), int(body["max_tokens"])
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                with fake.lock:
                    fake.running += 1
                    fake.peak = max(fake.peak, fake.running)
                try:
                    time.sleep(fake.first_token_s)
                    for i in range(n_out):
                        if i:
                            time.sleep(fake.token_s)
                        if fake.cut_after is not None and i == fake.cut_after:
                            if fake.cut == "abrupt":            # a chunk announced, never sent whole
                                self.wfile.write(b"40\r\ndata: {")
                            else:
                                self._chunk(b"")
                            self.wfile.flush()
                            return
                        piece = f" w{i}"
                        choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
                        self._chunk(b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n")
                    usage = {"prompt_tokens": str(n_in), "completion_tokens": str(n_out),
                             "total_tokens": str(n_in + n_out), **fake.usage}
                    text = ", ".join(f'"{k}": {v}' for k, v in usage.items())
                    self._chunk(b'data: {"choices": [], "usage": {' + text.encode() + b"}}\n\n")
                    self._chunk(b"data: [DONE]\n\n")
                    self._chunk(b"")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with fake.lock:
                        fake.running -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":          # a server to try `blis-gym observe` against by hand
    import sys
    with FakeOpenAI(*(float(x) for x in sys.argv[1:3])) as srv:
        print(srv.url, flush=True)
        threading.Event().wait()
