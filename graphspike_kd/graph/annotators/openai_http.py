"""``openai`` backend: any OpenAI-compatible HTTP server (vLLM, llama.cpp server, OpenAI, ...).

This is the way to annotate at scale: serve e.g. Llama-3.1-8B-Instruct with vLLM
(``vllm serve meta-llama/Llama-3.1-8B-Instruct``) and point ``base_url`` at it. Only the standard
library is used (:mod:`http.client` and a thread pool), so the backend adds no dependency.

- Requests: ``POST {base_url}/chat/completions`` with the ``"json"``-style messages of
  :func:`~graphspike_kd.graph.annotators.prompts.build_messages` (or ``/completions`` with the same
  prompt flattened, ``endpoint="completions"``), ``temperature`` 0 by default.
- Connections: HTTP/1.1 keep-alive. Connections are pooled and reused across requests and threads (at
  most ``concurrency`` open at once); one the server closed while idle is replaced transparently.
- Concurrency: at most ``concurrency`` requests in flight (a thread pool, default 32); answers are
  cached as they complete.
- Deadline: ``timeout`` bounds each try as a whole (connect, send, headers and body), not each socket
  read, so a server trickling bytes cannot hold a request past it. Replies larger than
  ``max_reply_bytes`` are refused.
- Failures: a timeout, a connection error, HTTP 429 or 5xx, or a reply that is not the documented JSON
  shape is retried up to ``max_retries`` times with exponential backoff
  (``backoff * 2**attempt`` seconds, capped at ``max_backoff``, at least a numeric ``Retry-After``).
  Other HTTP errors (400, 401, 404, ...) are not retried. With ``on_error="raise"`` (default) a node
  that still fails stops the run after in-flight requests finish; every answer received is cached,
  so a rerun asks only for the rest. ``on_error="invalid"`` gives such nodes label ``-1`` without
  caching them.
- Redirects are never followed: a 3xx answer is an error naming the new location, so the API key is
  only ever sent to the origin of ``base_url``.
- Secrets: the API key is read from the environment variable named by ``api_key_env`` (default
  ``OPENAI_API_KEY``) at request time and sent as ``Authorization: Bearer ...``; if the variable is
  unset no header is sent (local vLLM needs none). The key is redacted from every error message, log
  line and cached reply, even when a server echoes it back.
- Structured outputs (``structured="auto"``, default): every request carries an OpenAI
  ``response_format`` JSON schema, ``{"Category": <one of the class names>}`` with the category an
  ``enum``, which OpenAI, vLLM (guided decoding) and llama.cpp's server (grammar) all enforce, so that
  even small models answer with a valid class. A server that refuses the option (HTTP 400/422 naming
  it) is asked again without it, and the annotator remembers not to send it again.
- Confidence: with ``logprobs=True`` (default) the request asks for token log-probabilities; the
  confidence of the answer is then the probability the model gave the category it wrote,

  .. math:: p(c) = \\exp\\Big(\\sum_{t \\in \\mathrm{span}(c)} \\log p(t \\mid t_{<})\\Big),

  the product over the tokens that spell the category's value in the reply. Without logprobs (the
  server did not return them or refused the option) the reply's own ``Confidence`` field is used if it
  has one (0-1, or 0-100 read as a percentage), else 1.0 — one sampled answer carries no probability
  of its own.
- Parsing (:func:`~graphspike_kd.graph.annotators.prompts.parse_category`, linear in the reply's length
  and never recursing deeper than a fixed depth): the ``Category`` of the reply's JSON object, or a
  reply naming exactly one class; anything else is an invalid answer (``-1``), cached and counted,
  never mapped to a class.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from typing import Any

from .base import Annotator, AnnotatorError, NodeTextPrompting, QueryResult, dataset_fields
from .cache import AnnotationCache
from .hf import Neighbours
from .prompts import (
    _json_objects,
    build_messages,
    class_display_names,
    class_lookup,
    normalise_name,
    parse_category,
    render_plain,
)

logger = logging.getLogger(__name__)

__all__ = ["OpenAIAnnotator"]

_REDACTED = "[REDACTED]"


class _Retryable(Exception):
    """A failure worth another try (timeout, connection error, 429/5xx, malformed reply)."""


class _OptionRefused(Exception):
    """The server rejected an optional request field (``response_format``, ``logprobs``)."""


class OpenAIAnnotator(NodeTextPrompting, Annotator):
    """Annotate nodes through an OpenAI-compatible ``/v1/chat/completions`` (or ``/v1/completions``) server.

    Args:
        dataset (torch_geometric.data.Data): with ``name``, ``class_names`` and ``texts``.
        model (str): the served model's name, sent in every request and part of the cache key.
        base_url (str): the server's API root, ``http://`` or ``https://``.
            (default: :obj:`"http://localhost:8000/v1"`)
        endpoint (str): ``"chat"`` or ``"completions"``. (default: :obj:`"chat"`)
        api_key_env (str): environment variable holding the API key. (default: :obj:`"OPENAI_API_KEY"`)
        neighbours (mapping or callable, optional): context nodes per node (DNS neighbours).
        max_neighbours (int): at most this many context texts per prompt. (default: :obj:`16`)
        max_text_chars (int), max_neighbour_chars (int): text budgets. (default: :obj:`1500`, :obj:`300`)
        temperature (float): sampling temperature. (default: :obj:`0.0`)
        max_tokens (int): reply length limit. (default: :obj:`256`)
        timeout (float): seconds one try may take in all (connect, send, receive). (default: :obj:`60.0`)
        max_retries (int): retries after the first try. (default: :obj:`4`)
        backoff (float), max_backoff (float): retry delays in seconds. (default: :obj:`1.0`, :obj:`30.0`)
        concurrency (int): requests in flight at once, and pooled keep-alive connections.
            (default: :obj:`32`)
        structured (str): ``"auto"`` asks for a JSON schema whose ``Category`` is an enum of the class
            names and drops the option if the server refuses it; ``"off"`` never asks.
            (default: :obj:`"auto"`)
        logprobs (bool): ask for token log-probabilities and derive the confidence from them (dropped if
            the server refuses). (default: :obj:`True`)
        top_logprobs (int): alternatives per token asked for with ``logprobs``. (default: :obj:`5`)
        max_reply_bytes (int): larger reply bodies are refused as malformed. (default: :obj:`4 MiB`)
        on_error (str): ``"raise"`` or ``"invalid"`` for nodes that fail after all retries.
            (default: :obj:`"raise"`)
        extra_body (dict, optional): extra JSON fields for every request (e.g. ``{"top_p": 1.0}``).
        cache: the annotation cache (default: ``"default"``).
    """

    backend = "openai"

    def __init__(
        self,
        dataset: Any,
        *,
        model: str,
        base_url: str = "http://localhost:8000/v1",
        endpoint: str = "chat",
        api_key_env: str = "OPENAI_API_KEY",
        neighbours: Neighbours | None = None,
        max_neighbours: int = 16,
        max_text_chars: int = 1500,
        max_neighbour_chars: int = 300,
        temperature: float = 0.0,
        max_tokens: int = 256,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        concurrency: int = 32,
        structured: str = "auto",
        logprobs: bool = True,
        top_logprobs: int = 5,
        max_reply_bytes: int = 4 << 20,
        on_error: str = "raise",
        extra_body: Mapping[str, Any] | None = None,
        cache: AnnotationCache | str | os.PathLike[str] | None = "default",
        progress: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        fields = dataset_fields(dataset)
        if fields["texts"] is None:
            raise ValueError(f"dataset {fields['name']!r} has no node texts (data.texts is None)")
        if endpoint not in ("chat", "completions"):
            raise ValueError(f"endpoint must be 'chat' or 'completions', got {endpoint!r}")
        if on_error not in ("raise", "invalid"):
            raise ValueError(f"on_error must be 'raise' or 'invalid', got {on_error!r}")
        if structured not in ("auto", "off"):
            raise ValueError(f"structured must be 'auto' or 'off', got {structured!r}")
        if concurrency < 1 or max_retries < 0 or timeout <= 0 or max_reply_bytes < 1:
            raise ValueError(
                f"need concurrency >= 1, max_retries >= 0, timeout > 0, max_reply_bytes >= 1; "
                f"got {concurrency}, {max_retries}, {timeout}, {max_reply_bytes}"
            )
        if not model:
            raise ValueError("model must name the served model")
        parts = urllib.parse.urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        self.texts = fields["texts"]
        self.base_url = base_url.rstrip("/")
        self.endpoint = endpoint
        self.api_key_env = api_key_env
        self.neighbours = neighbours
        self.max_neighbours = int(max_neighbours)
        self.max_text_chars = int(max_text_chars)
        self.max_neighbour_chars = int(max_neighbour_chars)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.concurrency = int(concurrency)
        self.structured = structured
        self.logprobs = bool(logprobs)
        self.top_logprobs = int(top_logprobs)
        self.max_reply_bytes = int(max_reply_bytes)
        self.on_error = on_error
        self.extra_body = dict(extra_body or {})
        self._sleep = sleep
        path = (parts.path or "").rstrip("/")
        self._path = f"{path}/{'chat/completions' if endpoint == 'chat' else 'completions'}"
        self._url = f"{parts.scheme}://{parts.netloc}{self._path}"
        self._pool = _ConnectionPool(parts.scheme, parts.hostname, parts.port, self.concurrency)
        #: optional request fields the server refused ("response_format", "logprobs"); not sent again
        self.refused_options: set[str] = set()
        self._options_lock = threading.Lock()
        super().__init__(
            dataset_name=fields["name"],
            class_names=fields["class_names"],
            model_name=model,
            num_nodes=fields["num_nodes"],
            cache=cache,
            progress=progress,
        )
        self._display = class_display_names(self.dataset_name, self.class_names)
        self._lookup = class_lookup(self.dataset_name, self.class_names)

    # ------------------------------------------------------------------------------------------- prompts
    def messages_for(self, node: int) -> list[dict[str, str]]:
        text = self._text(node)
        if text is None:
            raise ValueError(f"node {node} has no text")
        related = [t for t in (self._text(v) for v in self.context_nodes(node)) if t is not None]
        return build_messages(
            self.dataset_name,
            self.class_names,
            text,
            related,
            style="json",
            max_text_chars=self.max_text_chars,
            max_neighbour_chars=self.max_neighbour_chars,
        )

    def prompt_for(self, node: int) -> str:
        if self._text(node) is None:
            return ""
        messages = self.messages_for(node)
        if self.endpoint == "completions":
            return render_plain(messages, answer_prefix="Answer:")
        return json.dumps(messages, ensure_ascii=False)

    def config_fingerprint(self) -> str:
        return json.dumps(
            {
                "classes": self.class_names,
                "endpoint": self.endpoint,
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
                "extra": self.extra_body,
                "structured": self.structured,
                "logprobs": self.logprobs,
            },
            sort_keys=True,
        )

    def response_format(self) -> dict[str, Any]:
        """The OpenAI ``response_format``: a JSON object whose ``Category`` is one of the class names."""
        return {
            "type": "json_schema",
            "json_schema": {
                "name": "node_category",
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {"Category": {"type": "string", "enum": list(self._display)}},
                    "required": ["Category"],
                    "additionalProperties": False,
                },
            },
        }

    # -------------------------------------------------------------------------------------------- HTTP
    def _request_body(self, node: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_name,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.endpoint == "chat":
            body["messages"] = self.messages_for(node)
        else:
            body["prompt"] = self.prompt_for(node)
        if self.structured == "auto":
            body["response_format"] = self.response_format()
        if self.logprobs:
            if self.endpoint == "chat":
                body["logprobs"] = True
                body["top_logprobs"] = self.top_logprobs
            else:
                body["logprobs"] = self.top_logprobs
        body.update(self.extra_body)
        return body

    def _without_refused(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._options_lock:
            refused = set(self.refused_options)
        if not refused:
            return body
        body = dict(body)
        if "response_format" in refused and "response_format" not in self.extra_body:
            body.pop("response_format", None)
        if "logprobs" in refused and "logprobs" not in self.extra_body:
            body.pop("logprobs", None)
            body.pop("top_logprobs", None)
        return body

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env)
        if key and len(key) >= 4:
            text = text.replace(key, _REDACTED)
        return text

    def _post_once(self, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        """One try: ``(status, headers, body)``, all of it within ``timeout`` seconds."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        deadline = time.monotonic() + self.timeout
        for fresh_try in (False, True):
            conn, reused = self._pool.acquire(self.timeout, fresh=fresh_try)
            watchdog = _Watchdog(conn, deadline)
            response = None
            try:
                conn.request("POST", self._path, body=body, headers=headers)
                left = deadline - time.monotonic()
                if watchdog.fired or left <= 0 or conn.sock is None:
                    raise TimeoutError("deadline passed while connecting or sending")
                conn.sock.settimeout(left)  # no single read may outlast the deadline either
                response = conn.getresponse()
                payload = _read_body(response, self.max_reply_bytes)
            except _ReplyTooLarge as exc:
                conn.close()
                raise _Retryable(f"reply from {self._url} larger than {exc.args[0]} bytes", None) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if watchdog.fired or time.monotonic() >= deadline:
                    raise _Retryable(
                        f"no complete reply from {self._url} within {self.timeout:g}s", None
                    ) from None
                stale = isinstance(
                    exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError
                )
                if reused and stale and response is None and not fresh_try:
                    continue  # the server closed an idle keep-alive connection: once more, fresh
                raise _Retryable(
                    f"{type(exc).__name__} talking to {self._url}: {self._redact(str(exc))}", None
                ) from None
            finally:
                watchdog.cancel()
            if watchdog.fired:
                conn.close()
                raise _Retryable(f"no complete reply from {self._url} within {self.timeout:g}s", None)
            self._pool.release(conn, reusable=not response.will_close)
            return response.status, response.headers, payload
        raise AssertionError("unreachable")

    def _exchange(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` once and return the decoded reply, classifying every failure."""
        status, headers, payload = self._post_once(json.dumps(body).encode("utf-8"))
        detail = self._redact(payload[:300].decode("utf-8", "replace"))
        if 300 <= status < 400:
            location = self._redact(str(headers.get("Location", "?")))
            raise AnnotatorError(
                f"HTTP {status} from {self._url}: redirect to {location} refused (redirects are not "
                "followed, so the API key never leaves base_url's origin); set base_url to the final address"
            )
        if status == 429 or status >= 500:
            raise _Retryable(f"HTTP {status} from {self._url}: {detail}", _retry_after(headers))
        if status in (400, 422):
            text = payload[:4096].decode("utf-8", "replace").lower()
            for option in ("response_format", "logprobs"):
                names = ("response_format", "json_schema") if option == "response_format" else ("logprobs",)
                if option in body and option not in self.extra_body and any(n in text for n in names):
                    raise _OptionRefused(option, f"HTTP {status} from {self._url}: {detail}")
        if status != 200:
            raise AnnotatorError(f"HTTP {status} from {self._url} (not retried): {detail}")
        try:
            reply = json.loads(payload)
        except (ValueError, RecursionError):
            raise _Retryable(f"malformed reply from {self._url}: {detail[:200]!r}", None) from None
        if not isinstance(reply, dict):
            raise _Retryable(f"malformed reply from {self._url}: {detail[:200]!r}", None)
        return reply

    def _content(self, reply: dict[str, Any]) -> tuple[str, Any]:
        """The reply's text and its ``logprobs`` field (or None)."""
        try:
            choice = reply["choices"][0]
            content = choice["message"]["content"] if self.endpoint == "chat" else choice["text"]
        except (KeyError, IndexError, TypeError):
            raise _Retryable(
                f"malformed reply from {self._url}: {self._redact(repr(reply))[:200]}", None
            ) from None
        if not isinstance(content, str):
            raise _Retryable(f"malformed reply from {self._url}: content is {type(content).__name__}", None)
        return self._redact(content), choice.get("logprobs") if isinstance(choice, dict) else None

    def ask(self, node: int) -> str:
        """The server's reply text for ``node``, with retries (uncached; :meth:`annotate` caches)."""
        return self._ask(node)[0]

    def _ask(self, node: int) -> tuple[str, Any]:
        full_body = self._request_body(node)
        attempt = 0
        while True:
            body = self._without_refused(full_body)
            try:
                return self._content(self._exchange(body))
            except _OptionRefused as exc:
                option, message = exc.args
                with self._options_lock:
                    new = option not in self.refused_options
                    self.refused_options.add(option)
                if new:
                    logger.warning("%s: server refused %r (%s); asking without it", self, option, message)
                continue  # not a retry: the same try without the refused option
            except _Retryable as exc:
                message, retry_after = exc.args
                if attempt == self.max_retries:
                    raise AnnotatorError(
                        f"node {node}: gave up after {attempt + 1} tries; last: {message}"
                    ) from None
                delay = min(self.max_backoff, self.backoff * 2**attempt)
                if retry_after is not None:
                    delay = min(self.max_backoff, max(delay, retry_after))
                logger.info(
                    "node %d: %s; retry %d/%d in %.2fs", node, message, attempt + 1, self.max_retries, delay
                )
                attempt += 1
                self._sleep(delay)

    def _to_result(self, node: int, reply: str, logprobs: Any = None) -> QueryResult:
        label = parse_category(reply, self.dataset_name, self.class_names)
        if label < 0:
            return QueryResult(node, label, 0.0, reply)
        confidence = _logprob_confidence(
            reply, logprobs, label, self._lookup, self._display, self.class_names
        )
        if confidence is None:
            confidence = _reply_confidence(reply)
        return QueryResult(node, label, confidence, reply)

    def _query(self, nodes: list[int]) -> Iterable[QueryResult]:
        asked = []
        for n in nodes:
            if self._text(n) is None:
                yield QueryResult(n, -1, 0.0, "no text for this node")
            else:
                asked.append(n)
        errors: list[tuple[int, BaseException]] = []
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="annotate-openai") as pool:
            futures = {pool.submit(self._ask, n): n for n in asked}
            try:
                for future in as_completed(futures):
                    node = futures[future]
                    try:
                        reply, logprobs = future.result()
                    except CancelledError:
                        continue
                    except Exception as exc:  # noqa: BLE001 - reported below, with the node
                        if self.on_error == "invalid":
                            yield QueryResult(
                                node, -1, 0.0, self._redact(f"<request failed: {exc}>"), cacheable=False
                            )
                            continue
                        if not errors:  # stop sending; let requests already in flight finish and be cached
                            for f in futures:
                                f.cancel()
                        errors.append((node, exc))
                        continue
                    yield self._to_result(node, reply, logprobs)
            finally:
                for f in futures:
                    f.cancel()
        if errors:
            first = errors[0][1]
            raise AnnotatorError(
                self._redact(
                    f"{len(errors)} request(s) to {self.base_url} failed; answers received so far are "
                    f"cached. First: {first}"
                )
            ) from None

    def close(self) -> None:
        """Close the pooled connections and the cache file."""
        self._pool.close()
        super().close()

    def __repr__(self) -> str:
        return (
            f"OpenAIAnnotator(dataset={self.dataset_name!r}, model={self.model_name!r}, "
            f"base_url={self.base_url!r}, key_env={self.api_key_env!r})"
        )


# ----------------------------------------------------------------------------------------- connections
class _ConnectionPool:
    """Keep-alive connections to one origin, shared by the worker threads (LIFO, at most ``size`` idle)."""

    def __init__(self, scheme: str, host: str, port: int | None, size: int) -> None:
        self.scheme, self.host, self.port, self.size = scheme, host, port, size
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._ssl = ssl.create_default_context() if scheme == "https" else None

    def acquire(self, timeout: float, *, fresh: bool = False) -> tuple[http.client.HTTPConnection, bool]:
        """A connection and whether it was used before (``fresh=True``: always a new one)."""
        if not fresh:
            with self._lock:
                if self._idle:
                    conn = self._idle.pop()
                    conn.timeout = timeout
                    if conn.sock is not None:
                        conn.sock.settimeout(timeout)
                    return conn, True
        if self.scheme == "https":
            return _HTTPSConnection(self.host, self.port, timeout=timeout, context=self._ssl), False
        return _HTTPConnection(self.host, self.port, timeout=timeout), False

    def release(self, conn: http.client.HTTPConnection, *, reusable: bool) -> None:
        if reusable and conn.sock is not None:
            with self._lock:
                if len(self._idle) < self.size:
                    self._idle.append(conn)
                    return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _HTTPConnection(http.client.HTTPConnection):
    """Sends without Nagle's delay: a request leaves in one segment, so no delayed-ACK stall on reuse."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _HTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Watchdog:
    """Shut a connection's socket down at ``deadline``, ending any read in progress."""

    def __init__(self, conn: http.client.HTTPConnection, deadline: float) -> None:
        self.conn = conn
        self.fired = False
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        sock = self.conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self) -> None:
        self._timer.cancel()


class _ReplyTooLarge(Exception):
    pass


def _read_body(response: http.client.HTTPResponse, limit: int) -> bytes:
    length = response.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _ReplyTooLarge(limit)
    chunks, total = [], 0
    while True:
        chunk = response.read(min(65536, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise _ReplyTooLarge(limit)
    return b"".join(chunks)


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    value = headers.get("Retry-After") if headers else None
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------ confidence
def _reply_confidence(reply: str) -> float:
    for obj in _json_objects(reply):
        for key, value in obj.items():
            if str(key).strip().lower() == "confidence" and isinstance(value, int | float) and value >= 0:
                value = float(value)
                return value if value <= 1.0 else min(value / 100.0, 1.0)
    return 1.0


_CATEGORY_VALUE = re.compile(r'"\s*category\s*"\s*:\s*"((?:[^"\\]|\\.)*)"', re.IGNORECASE)


def _category_span(
    reply: str, label: int, lookup: Mapping[str, int], names: list[str], raw_names: list[str]
) -> tuple[int, int] | None:
    """Character span of the text that named class ``label``: the JSON ``Category`` value or the name."""
    for match in _CATEGORY_VALUE.finditer(reply):
        if lookup.get(normalise_name(match.group(1))) == label:
            return match.span(1)
        return None
    lowered = reply.lower()
    for name in (names[label], raw_names[label]):
        pos = lowered.find(name.lower())
        if pos >= 0:
            return pos, pos + len(name)
    return None


def _token_logprobs(logprobs: Any) -> list[tuple[bytes, float]] | None:
    """``[(token bytes, logprob)]`` from a chat (``content`` list) or completions (``tokens``) field."""
    if not isinstance(logprobs, dict):
        return None
    out: list[tuple[bytes, float]] = []
    content = logprobs.get("content")
    if isinstance(content, list):
        for entry in content:
            if not isinstance(entry, dict) or not isinstance(entry.get("logprob"), int | float):
                return None
            raw = entry.get("bytes")
            if isinstance(raw, list) and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
                token = bytes(raw)
            elif isinstance(entry.get("token"), str):
                token = entry["token"].encode("utf-8")
            else:
                return None
            out.append((token, float(entry["logprob"])))
        return out
    tokens, values = logprobs.get("tokens"), logprobs.get("token_logprobs")
    if isinstance(tokens, list) and isinstance(values, list) and len(tokens) == len(values):
        for token, value in zip(tokens, values, strict=True):
            if not isinstance(token, str) or not isinstance(value, int | float):
                return None
            out.append((token.encode("utf-8"), float(value)))
        return out
    return None


def _logprob_confidence(
    reply: str,
    logprobs: Any,
    label: int,
    lookup: Mapping[str, int],
    names: list[str],
    raw_names: list[str],
) -> float | None:
    """``exp`` of the summed log-probabilities of the tokens spelling the answer's category, or None."""
    tokens = _token_logprobs(logprobs)
    if not tokens:
        return None
    span = _category_span(reply, label, lookup, names, raw_names)
    if span is None:
        return None
    text = reply.encode("utf-8")
    joined = b"".join(t for t, _ in tokens)
    offset = joined.find(text) if joined != text else 0
    if offset < 0:
        return None
    start = offset + len(reply[: span[0]].encode("utf-8"))
    end = offset + len(reply[: span[1]].encode("utf-8"))
    total, pos, used = 0.0, 0, 0
    for token, value in tokens:
        t_start, pos = pos, pos + len(token)
        if pos > start and t_start < end:
            if not math.isfinite(value):
                return 0.0 if value == -math.inf else None
            total += min(value, 0.0)
            used += 1
    return math.exp(total) if used else None
