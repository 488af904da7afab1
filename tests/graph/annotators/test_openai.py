"""The ``openai`` backend against a real HTTP server on 127.0.0.1 (ephemeral port) started by the test."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest

from graphspike_kd.graph.annotators import AnnotatorError, OpenAIAnnotator, get_annotator
from tests._local_http import start_local_server

from .conftest import make_tag

SECRET = "sk-test-do-not-leak-0123456789"

# node text -> how the fake server behaves for it
TEXTS = [
    "ok ML paper",  # 0: clean JSON answer
    "ok DB paper with confidence",  # 1: JSON answer carrying its own Confidence
    "SLOW once then ok",  # 2: first request exceeds the client timeout
    "FAIL500 once then ok",  # 3: first request gets HTTP 500
    "GARBAGE once then ok",  # 4: first reply body is not JSON (malformed reply)
    "NOCLASS reply",  # 5: well-formed reply naming no valid class
    None,  # 6: no text -> never sent
    "PLAIN reply",  # 7: no JSON, but names exactly one class
]


class FakeServer:
    """An OpenAI-compatible /v1/chat/completions and /v1/completions endpoint with scripted failures."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.calls: Counter[str] = Counter()
        self.auth_headers: list[str | None] = []
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with server.lock:
                    server.bodies.append(body)
                    server.auth_headers.append(self.headers.get("Authorization"))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                self.fake, self.counted = server, True
                try:
                    server.respond(self, body)
                finally:
                    FakeServer.leave(self)

        self.httpd, port = start_local_server(Handler)
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def respond(self, handler, body):
        if "messages" in body:
            text = json.loads(body["messages"][1]["content"])["Text"]
        else:
            text = body["prompt"].split('"Text": "')[1].split('"')[0]
        with self.lock:
            self.calls[text] += 1
            first = self.calls[text] == 1
        if self.delay:
            time.sleep(self.delay)
        if text.startswith("SLOW") and first:
            time.sleep(0.8)
        if text.startswith("FAIL500") and first or text.startswith("ALWAYS500"):
            return self.send(handler, 500, b'{"error": "internal"}')
        if text.startswith("BAD400"):
            return self.send(handler, 400, b'{"error": "bad request"}')
        if text.startswith("GARBAGE") and first:
            return self.send(handler, 200, b"<html>proxy error</html>")
        if text.startswith("NOCLASS"):
            content = '{"Reasoning": "unclear", "Category": "Astrology"}'
        elif text.startswith("PLAIN"):
            content = "This is clearly about Information Retrieval."
        elif "confidence" in text:
            content = '{"Reasoning": "queries", "Category": "Databases", "Confidence": 80}'
        else:
            content = '```json\n{"Reasoning": "learning", "Category": "Machine Learning"}\n```'
        if "messages" in body:
            reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
        else:
            reply = {"choices": [{"index": 0, "text": content}]}
        return self.send(handler, 200, json.dumps(reply).encode())

    @staticmethod
    def leave(handler):
        """The request stops counting as in flight once its answer is about to leave (a client may send
        its next request as soon as it has read this one, before the handler thread returns)."""
        if getattr(handler, "counted", False):
            handler.counted = False
            with handler.fake.lock:
                handler.fake.in_flight -= 1

    @staticmethod
    def send(handler, code, payload: bytes):
        FakeServer.leave(handler)
        try:
            handler.send_response(code)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = FakeServer()
    yield srv
    srv.close()


def _annotator(server, data, **kwargs):
    kwargs.setdefault("cache", None)
    kwargs.setdefault("concurrency", 3)
    return get_annotator(
        "openai",
        dataset=data,
        model="fake-llm",
        base_url=server.base_url,
        timeout=0.3,
        backoff=0.01,
        max_retries=2,
        progress=False,
        **kwargs,
    )


def test_answers_retries_timeouts_and_invalid_replies(server, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    data = make_tag(texts=TEXTS)
    cache = tmp_path / "openai.jsonl"
    ann = _annotator(server, data, cache=cache)
    assert isinstance(ann, OpenAIAnnotator)
    with caplog.at_level(logging.DEBUG):
        out = ann.annotate(np.arange(8))
    # ML=1, DB=3, ML, ML, ML, invalid (Astrology), invalid (no text), IR=2 (plain reply naming one class)
    assert out.labels.tolist() == [1, 3, 1, 1, 1, -1, -1, 2]
    np.testing.assert_allclose(out.confidence, [1, 0.8, 1, 1, 1, 0, 0, 1])
    assert out.n_invalid == 2 and "Astrology" in out.raw[5]
    # the timeout, the 500 and the malformed body were each retried once; nothing else was asked twice
    assert server.calls["SLOW once then ok"] == 2
    assert server.calls["FAIL500 once then ok"] == 2
    assert server.calls["GARBAGE once then ok"] == 2
    assert server.calls["ok ML paper"] == 1 and server.calls["NOCLASS reply"] == 1
    assert sum(server.calls.values()) == 7 + 3  # node 6 (no text) never sent
    # the key was sent, but is nowhere in the logs or the cache
    assert set(server.auth_headers) == {f"Bearer {SECRET}"}
    assert SECRET not in caplog.text and SECRET not in cache.read_text() and SECRET not in repr(ann)
    assert server.bodies[0]["model"] == "fake-llm" and server.bodies[0]["temperature"] == 0.0
    # rerun: everything (including the invalid reply) comes from the cache
    before = sum(server.calls.values())
    again = _annotator(server, data, cache=cache)
    assert again.annotate(np.arange(8)).labels.tolist() == out.labels.tolist()
    assert sum(server.calls.values()) == before and again.n_queried == 0


def test_no_key_no_header(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("MY_KEY", SECRET)
    data = make_tag(texts=TEXTS)
    _annotator(server, data).annotate([0])
    _annotator(server, data, api_key_env="MY_KEY").annotate([0])
    assert server.auth_headers == [None, f"Bearer {SECRET}"]


def test_persistent_failure_raises_after_caching_the_rest(server, tmp_path):
    texts = ["ok one", "ALWAYS500 broken", "ok two", "ok three"]
    data = make_tag(texts=texts)
    cache = tmp_path / "c.jsonl"
    ann = _annotator(server, data, cache=cache, concurrency=1)
    with pytest.raises(AnnotatorError, match="gave up after 3 tries; last: HTTP 500"):
        ann.annotate([0, 1, 2, 3])
    assert server.calls["ALWAYS500 broken"] == 3  # first try + max_retries=2
    cached = [json.loads(line)["node"] for line in cache.read_text().splitlines()]
    assert 0 in cached and 1 not in cached and len(cached) == len(set(cached))
    # on_error="invalid": the failed node gets -1 and is not cached, so a rerun asks again
    lenient = _annotator(server, data, cache=cache, on_error="invalid")
    out = lenient.annotate([0, 1, 2, 3])
    assert out.labels.tolist() == [1, -1, 1, 1] and "request failed" in out.raw[1]
    assert 1 not in [json.loads(line)["node"] for line in cache.read_text().splitlines()]


def test_client_error_is_not_retried(server):
    data = make_tag(texts=["BAD400 request"])
    with pytest.raises(AnnotatorError, match="HTTP 400 .*not retried"):
        _annotator(server, data).annotate([0])
    assert server.calls["BAD400 request"] == 1


def test_concurrency_is_bounded(monkeypatch):
    srv = FakeServer(delay=0.05)
    try:
        data = make_tag(texts=[f"ok paper {i}" for i in range(10)])
        out = _annotator(srv, data, concurrency=2).annotate(np.arange(10))
        assert out.labels.tolist() == [1] * 10
        assert 1 <= srv.max_in_flight <= 2
    finally:
        srv.close()


def test_completions_endpoint_and_unreachable_server(server):
    data = make_tag(texts=TEXTS)
    out = _annotator(server, data, endpoint="completions").annotate([0, 7])
    assert out.labels.tolist() == [1, 2] and "prompt" in server.bodies[0]
    dead = get_annotator(
        "openai",
        dataset=data,
        model="m",
        base_url="http://127.0.0.1:9/v1",
        timeout=0.2,
        max_retries=1,
        backoff=0.0,
        cache=None,
        progress=False,
    )
    with pytest.raises(AnnotatorError, match="gave up after 2 tries"):
        dead.annotate([0])


def test_bad_arguments():
    data = make_tag()
    with pytest.raises(ValueError, match="endpoint"):
        OpenAIAnnotator(data, model="m", endpoint="embeddings", cache=None)
    with pytest.raises(ValueError, match="on_error"):
        OpenAIAnnotator(data, model="m", on_error="ignore", cache=None)
    with pytest.raises(ValueError, match="concurrency"):
        OpenAIAnnotator(data, model="m", concurrency=0, cache=None)
