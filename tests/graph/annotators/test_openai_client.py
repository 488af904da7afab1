"""The ``openai`` client's transport: redirects, secrets, keep-alive, deadline, logprobs, structured
outputs and parsing, each against a scripted HTTP/1.1 server on 127.0.0.1 (ephemeral port)."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest

from graphspike_kd.graph.annotators import AnnotatorError, get_annotator
from graphspike_kd.graph.annotators.prompts import _json_objects, parse_category
from tests._local_http import start_local_server

from .conftest import make_tag

SECRET = "sk-test-secret-abcdef0123456789"
ML = '{"Category": "Machine Learning"}'


class ScriptedServer:
    """A keep-alive (HTTP/1.1) server whose answer to each POST is computed by ``script(server, body)``.

    ``script`` returns ``(status, headers, payload)``, or None after writing the response itself.
    Records each request's headers and body, and the number of TCP connections accepted.
    """

    def __init__(self, script: Callable, *, http11: bool = True):
        self.script = script
        self.requests: list[tuple[dict, dict]] = []
        self.connections = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if http11 else "HTTP/1.0"

            def setup(self):
                super().setup()
                with server.lock:
                    server.connections += 1

            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with server.lock:
                    server.requests.append((dict(self.headers), body))
                answer = server.script(server, body, self)
                if answer is None:
                    return
                status, headers, payload = answer
                try:
                    self.send_response(status)
                    for k, v in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd, self.port = start_local_server(Handler)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(script, **kwargs):
        srv = ScriptedServer(script, **kwargs)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.close()


def chat_reply(content: str, logprobs: dict | None = None) -> tuple[int, dict, bytes]:
    choice: dict = {"index": 0, "message": {"role": "assistant", "content": content}}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return 200, {}, json.dumps({"choices": [choice]}).encode()


def annotator(url, data, **kwargs):
    kwargs.setdefault("cache", None)
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("max_retries", 0)
    return get_annotator(
        "openai", dataset=data, model="fake", base_url=url, backoff=0.0, progress=False, **kwargs
    )


def test_redirect_is_refused_and_the_key_stays_at_the_origin(serve, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    elsewhere = serve(lambda srv, body, h: chat_reply(ML))
    redirector = serve(
        lambda srv, body, h: (302, {"Location": f"{elsewhere.base_url}/chat/completions"}, b"")
    )
    ann = annotator(redirector.base_url, make_tag(), max_retries=2)
    with pytest.raises(AnnotatorError, match="HTTP 302 .*redirect.* refused") as info:
        ann.annotate([0])
    assert len(redirector.requests) == 1  # refused, not retried
    assert elsewhere.requests == []  # never contacted: no header, no answer used
    assert redirector.requests[0][0]["Authorization"] == f"Bearer {SECRET}"
    for status in (301, 303, 307, 308):
        hop = serve(lambda srv, body, h, s=status: (s, {"Location": elsewhere.base_url}, b""))
        with pytest.raises(AnnotatorError, match="redirect"):
            annotator(hop.base_url, make_tag()).annotate([0])
    assert elsewhere.requests == []
    assert SECRET not in str(info.value)


def test_key_never_leaks_when_the_server_echoes_it(serve, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    texts = ["echo in content", "echo in 500", "echo in 400", "echo in redirect"]

    def echo(srv, body, handler):
        text = json.loads(body["messages"][1]["content"])["Text"]
        auth = handler.headers["Authorization"]
        if text.endswith("content"):
            return chat_reply(json.dumps({"Category": "Databases", "Reasoning": f"you sent {auth}"}))
        if text.endswith("500"):
            return 500, {}, f"internal error for {auth}".encode()
        if text.endswith("400"):
            return 400, {}, json.dumps({"error": f"bad key {auth}"}).encode()
        return 302, {"Location": f"http://127.0.0.1:9/?key={auth}"}, b""

    srv = serve(echo)
    cache = tmp_path / "c.jsonl"
    ann = annotator(srv.base_url, make_tag(texts=texts), cache=cache, max_retries=1, on_error="invalid")
    with caplog.at_level(logging.DEBUG):
        out = ann.annotate([0, 1, 2, 3])
    assert out.labels.tolist() == [3, -1, -1, -1]
    assert "[REDACTED]" in out.raw[0] and SECRET not in "".join(out.raw)
    assert SECRET not in cache.read_text() and "[REDACTED]" in cache.read_text()
    assert SECRET not in caplog.text
    for node in (1, 2, 3):  # raised errors: message and the whole printed traceback
        strict = annotator(srv.base_url, make_tag(texts=texts), max_retries=1)
        with pytest.raises(AnnotatorError) as info:
            strict.annotate([node])
        printed = "".join(traceback.format_exception(info.value))
        assert SECRET not in printed and SECRET not in str(info.value)


def test_keep_alive_reuses_connections_and_concurrency_is_configurable(serve):
    in_flight, peak = [0], [0]
    lock = threading.Lock()

    def slow(srv, body, handler):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.02)
        with lock:
            in_flight[0] -= 1
        return chat_reply(ML)

    srv = serve(slow)
    data = make_tag(texts=[f"paper {i}" for i in range(40)])
    ann = annotator(srv.base_url, data, concurrency=4)
    assert annotator(srv.base_url, data).concurrency == 32  # the default
    assert ann.annotate(np.arange(20)).labels.tolist() == [1] * 20
    assert 2 <= peak[0] <= 4
    assert srv.connections <= 4  # 20 requests over at most `concurrency` connections
    before = srv.connections
    ann.annotate(np.arange(20, 40))  # a second call reuses the pooled connections
    assert srv.connections == before and len(srv.requests) == 40
    ann.close()


def test_server_closing_an_idle_connection_is_not_an_error(serve):
    def answer_then_hang_up(srv, body, handler):
        handler.close_connection = True  # closes after this reply without announcing it
        return chat_reply(ML)

    srv = serve(answer_then_hang_up)
    ann = annotator(srv.base_url, make_tag(texts=["a", "b", "c"]), concurrency=1, max_retries=0)
    for node in range(3):  # each request after the first finds its pooled connection closed
        assert ann.annotate([node]).labels.tolist() == [1]
    assert len(srv.requests) == 3 and srv.connections == 3


def test_deadline_bounds_a_trickling_server(serve):
    def trickle(srv, body, handler, headers_too=False):
        try:
            if headers_too:
                for b in b"HTTP/1.1 200 OK\r\n":
                    handler.wfile.write(bytes([b]))
                    handler.wfile.flush()
                    time.sleep(0.1)
            handler.send_response(200)
            handler.send_header("Content-Length", "100000")
            handler.end_headers()
            for _ in range(60):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass

    for headers_too in (False, True):
        srv = serve(lambda s, body, h, ht=headers_too: trickle(s, body, h, ht))
        ann = annotator(srv.base_url, make_tag(), timeout=0.5, max_retries=1)
        start = time.monotonic()
        with pytest.raises(AnnotatorError, match="no complete reply .* within 0.5s"):
            ann.annotate([0])
        elapsed = time.monotonic() - start
        assert elapsed < 1.6, elapsed  # two tries of 0.5 s each, not 6 s of trickle per try


def _chat_logprobs(pieces: list[tuple[str, float]]) -> dict:
    return {
        "content": [
            {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []} for t, lp in pieces
        ]
    }


def test_confidence_from_logprobs(serve):
    pieces = [('{"', -0.01), ("Category", -0.02), ('":', -0.01), (' "', -0.05), ("Machine", -0.4)]
    pieces += [(" Learning", -0.1), ('"}', -0.01)]
    content = "".join(t for t, _ in pieces)

    def script(srv, body, handler):
        text = json.loads(body["messages"][1]["content"])["Text"]
        if text == "with logprobs":
            return chat_reply(content, _chat_logprobs(pieces))
        if text == "misaligned":
            return chat_reply(content, _chat_logprobs([("xyz", -3.0)]))
        return chat_reply('{"Category": "Machine Learning", "Confidence": 0.7}')

    srv = serve(script)
    data = make_tag(texts=["with logprobs", "without logprobs", "misaligned"])
    out = annotator(srv.base_url, data).annotate([0, 1, 2])
    assert out.labels.tolist() == [1, 1, 1]
    np.testing.assert_allclose(out.confidence, [math.exp(-0.5), 0.7, 1.0], rtol=1e-6)
    body = srv.requests[0][1]
    assert body["logprobs"] is True and body["top_logprobs"] == 5
    off = annotator(srv.base_url, make_tag(texts=["x"]), logprobs=False)
    off.annotate([0])
    assert "logprobs" not in srv.requests[-1][1]


def test_confidence_from_completions_logprobs(serve):
    tokens = ["Category", ":", " Data", "bases"]
    values = [-0.2, -0.1, -0.3, -0.05]

    def script(srv, body, handler):
        assert body["logprobs"] == 5 and "prompt" in body
        choice = {
            "index": 0,
            "text": "".join(tokens),
            "logprobs": {"tokens": tokens, "token_logprobs": values},
        }
        return 200, {}, json.dumps({"choices": [choice]}).encode()

    srv = serve(script)
    out = annotator(srv.base_url, make_tag(texts=["db"]), endpoint="completions").annotate([0])
    assert out.labels.tolist() == [3]
    np.testing.assert_allclose(out.confidence, [math.exp(-0.35)], rtol=1e-6)


def test_structured_output_asked_and_dropped_when_refused(serve):
    data = make_tag(texts=[f"paper {i}" for i in range(6)])
    display = ["Artificial Intelligence", "Machine Learning", "Information Retrieval", "Databases"]
    display += ["Agents", "Human-Computer Interaction"]

    def accepting(srv, body, handler):
        if "response_format" not in body:
            return 400, {}, b'{"error": "this test server wants a schema"}'
        fmt = body["response_format"]
        schema = fmt["json_schema"]["schema"]
        assert fmt["type"] == "json_schema" and schema["properties"]["Category"]["enum"] == display
        return chat_reply('{"Category": "Databases"}')

    ok = serve(accepting)
    assert annotator(ok.base_url, data).annotate([0, 1]).labels.tolist() == [3, 3]

    def refusing(srv, body, handler):
        if "response_format" in body:
            return 400, {}, b'{"error": {"message": "Unrecognized request argument: response_format"}}'
        return chat_reply("I think this is about Databases.")

    no = serve(refusing)
    ann = annotator(no.base_url, data, concurrency=1)
    assert ann.annotate([0, 1, 2]).labels.tolist() == [3, 3, 3]
    sent = ["response_format" in body for _, body in no.requests]
    assert sent == [True, False, False, False]  # one refusal, then never asked again
    assert ann.refused_options == {"response_format"}
    off = annotator(ok.base_url, data, structured="off", logprobs=False)
    with pytest.raises(AnnotatorError, match="not retried"):  # `accepting` fails without the option
        off.annotate([3])

    def refuses_logprobs(srv, body, handler):
        if "logprobs" in body:
            return 400, {}, b'{"error": "logprobs is not supported by this model"}'
        return chat_reply('{"Category": "Agents"}')

    lp = serve(refuses_logprobs)
    ann = annotator(lp.base_url, data, concurrency=1)
    assert ann.annotate([0, 1]).labels.tolist() == [4, 4]
    assert [("logprobs" in b) for _, b in lp.requests] == [True, False, False]
    other400 = serve(lambda s, body, h: (400, {}, b'{"error": "context length exceeded"}'))
    with pytest.raises(AnnotatorError, match="HTTP 400 .*not retried"):
        annotator(other400.base_url, data).annotate([0])
    assert len(other400.requests) == 1


def test_big_and_deep_replies(serve):
    big = '{"Reasoning": "' + "{[" * 180_000 + '"} then {"Category": "Databases"}'  # ~720 KB
    deep_content = '{"a":' * 50_000 + '"x"' + "}" * 50_000
    deep_envelope = '{"choices": ' + "[" * 100_000 + "]" * 100_000 + "}"

    def script(srv, body, handler):
        text = json.loads(body["messages"][1]["content"])["Text"]
        if text == "big":
            return chat_reply(big)
        if text == "deep":
            return chat_reply(deep_content)
        return 200, {}, deep_envelope.encode()

    srv = serve(script)
    data = make_tag(texts=["big", "deep", "deep envelope"])
    ann = annotator(srv.base_url, data, max_reply_bytes=8 << 20)
    start = time.perf_counter()
    out = ann.annotate([0, 1])
    assert time.perf_counter() - start < 1.0
    assert out.labels.tolist() == [3, -1]
    with pytest.raises(AnnotatorError, match="malformed reply"):
        ann.annotate([2])
    small = annotator(srv.base_url, data, max_reply_bytes=1000)
    with pytest.raises(AnnotatorError, match="larger than 1000 bytes"):
        small.annotate([0])


def test_json_objects_linear_and_depth_safe():
    start = time.perf_counter()
    for reply in ["{" * 720_000, '{"a": "' + "{" * 720_000, '{"a":[' * 120_000, "[" * 720_000]:
        assert _json_objects(reply) == []
    assert time.perf_counter() - start < 2.0
    assert _json_objects('He said "hi". {"Reasoning": "a {b} \\" }", "Category": "ML"}') == [
        {"Reasoning": 'a {b} " }', "Category": "ML"}
    ]
    assert _json_objects('{"result": {"Category": "ML"} and the reply was cut') == [{"Category": "ML"}]
    nested = _json_objects('{"a": {"Category": "x"}} {"b": 1}')
    assert nested == [{"a": {"Category": "x"}}, {"Category": "x"}, {"b": 1}]
    classes = ["AI", "ML", "IR", "DB", "Agents", "HCI"]
    too_deep = '{"x": ' * 40 + '{"Category": "Databases"}' + "}" * 40  # not decoded; names one class
    assert parse_category(too_deep, "citeseer", classes) == 3
    assert parse_category('{"x": ' * 40 + '{"y": 1}' + "}" * 40, "citeseer", classes) == -1
    assert parse_category('{"x": {"Category": "ML"}}', "citeseer", classes) == 1
