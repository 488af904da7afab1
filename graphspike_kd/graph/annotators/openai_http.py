"""``openai`` backend: any OpenAI-compatible HTTP server (vLLM, llama.cpp server, OpenAI, ...).

This is the way to annotate at scale: serve e.g. Llama-3.1-8B-Instruct with vLLM
(``vllm serve meta-llama/Llama-3.1-8B-Instruct``) and point ``base_url`` at it. Only the standard
library is used (:mod:`urllib.request` and a thread pool), so the backend adds no dependency.

- Requests: ``POST {base_url}/chat/completions`` with the ``"json"``-style messages of
  :func:`~graphspike_kd.graph.annotators.prompts.build_messages` (or ``/completions`` with the same
  prompt flattened, ``endpoint="completions"``), ``temperature`` 0 by default.
- Secrets: the API key is read from the environment variable named by ``api_key_env`` (default
  ``OPENAI_API_KEY``) at request time and sent as ``Authorization: Bearer ...``; if the variable is
  unset no header is sent (local vLLM needs none). The key never appears in logs, errors, ``repr`` or
  the cache, which stores only the reply.
- Failures: a timeout, a connection error, HTTP 429 or 5xx, or a reply that is not the documented JSON
  shape is retried up to ``max_retries`` times with exponential backoff
  (``backoff * 2**attempt`` seconds, capped at ``max_backoff``, at least a numeric ``Retry-After``).
  Other HTTP errors (400, 401, 404, ...) are not retried. With ``on_error="raise"`` (default) a node
  that still fails stops the run after in-flight requests finish; every answer received is cached,
  so a rerun asks only for the rest. ``on_error="invalid"`` gives such nodes label ``-1`` without
  caching them.
- Concurrency: at most ``concurrency`` requests in flight (a thread pool); answers are cached as they
  complete.
- Parsing (:func:`~graphspike_kd.graph.annotators.prompts.parse_category`): the ``Category`` of the
  reply's JSON object, or a reply naming exactly one class; anything else is an invalid answer
  (``-1``), cached and counted, never mapped to a class. Confidence: the reply's own ``Confidence``
  field if it has one (0-1, or 0-100 read as a percentage), else 1.0 — one sampled answer carries no
  probability of its own.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from typing import Any

from .base import Annotator, AnnotatorError, NodeTextPrompting, QueryResult, dataset_fields
from .cache import AnnotationCache
from .hf import Neighbours
from .prompts import _json_objects, build_messages, parse_category, render_plain

logger = logging.getLogger(__name__)

__all__ = ["OpenAIAnnotator"]


class _Retryable(Exception):
    """A failure worth another try (timeout, connection error, 429/5xx, malformed reply)."""


class OpenAIAnnotator(NodeTextPrompting, Annotator):
    """Annotate nodes through an OpenAI-compatible ``/v1/chat/completions`` (or ``/v1/completions``) server.

    Args:
        dataset (torch_geometric.data.Data): with ``name``, ``class_names`` and ``texts``.
        model (str): the served model's name, sent in every request and part of the cache key.
        base_url (str): the server's API root. (default: :obj:`"http://localhost:8000/v1"`)
        endpoint (str): ``"chat"`` or ``"completions"``. (default: :obj:`"chat"`)
        api_key_env (str): environment variable holding the API key. (default: :obj:`"OPENAI_API_KEY"`)
        neighbours (mapping or callable, optional): context nodes per node (DNS neighbours).
        max_neighbours (int): at most this many context texts per prompt. (default: :obj:`16`)
        max_text_chars (int), max_neighbour_chars (int): text budgets. (default: :obj:`1500`, :obj:`300`)
        temperature (float): sampling temperature. (default: :obj:`0.0`)
        max_tokens (int): reply length limit. (default: :obj:`256`)
        timeout (float): seconds per request. (default: :obj:`60.0`)
        max_retries (int): retries after the first try. (default: :obj:`4`)
        backoff (float), max_backoff (float): retry delays in seconds. (default: :obj:`1.0`, :obj:`30.0`)
        concurrency (int): requests in flight at once. (default: :obj:`4`)
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
        concurrency: int = 4,
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
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError(
                f"need concurrency >= 1, max_retries >= 0, timeout > 0; "
                f"got {concurrency}, {max_retries}, {timeout}"
            )
        if not model:
            raise ValueError("model must name the served model")
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
        self.on_error = on_error
        self.extra_body = dict(extra_body or {})
        self._sleep = sleep
        super().__init__(
            dataset_name=fields["name"],
            class_names=fields["class_names"],
            model_name=model,
            num_nodes=fields["num_nodes"],
            cache=cache,
            progress=progress,
        )

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
            },
            sort_keys=True,
        )

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
        body.update(self.extra_body)
        return body

    def _post_once(self, body: bytes) -> str:
        url = f"{self.base_url}/{'chat/completions' if self.endpoint == 'chat' else 'completions'}"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            if exc.code == 429 or exc.code >= 500:
                raise _Retryable(f"HTTP {exc.code} from {url}: {detail}", _retry_after(exc)) from exc
            raise AnnotatorError(f"HTTP {exc.code} from {url} (not retried): {detail}") from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise _Retryable(f"{type(exc).__name__} talking to {url}: {exc}", None) from exc
        try:
            reply = json.loads(payload)
            choice = reply["choices"][0]
            content = choice["message"]["content"] if self.endpoint == "chat" else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise _Retryable(f"malformed reply from {url}: {payload[:200]!r}", None) from exc
        if not isinstance(content, str):
            raise _Retryable(f"malformed reply from {url}: content is {type(content).__name__}", None)
        return content

    def ask(self, node: int) -> str:
        """The server's reply text for ``node``, with retries (uncached; :meth:`annotate` caches)."""
        body = json.dumps(self._request_body(node)).encode("utf-8")
        for attempt in range(self.max_retries + 1):
            try:
                return self._post_once(body)
            except _Retryable as exc:
                message, retry_after = exc.args
                if attempt == self.max_retries:
                    raise AnnotatorError(
                        f"node {node}: gave up after {attempt + 1} tries; last: {message}"
                    ) from exc
                delay = min(self.max_backoff, self.backoff * 2**attempt)
                if retry_after is not None:
                    delay = min(self.max_backoff, max(delay, retry_after))
                logger.info(
                    "node %d: %s; retry %d/%d in %.2fs", node, message, attempt + 1, self.max_retries, delay
                )
                self._sleep(delay)
        raise AssertionError("unreachable")

    def _to_result(self, node: int, reply: str) -> QueryResult:
        label = parse_category(reply, self.dataset_name, self.class_names)
        return QueryResult(node, label, _reply_confidence(reply) if label >= 0 else 0.0, reply)

    def _query(self, nodes: list[int]) -> Iterable[QueryResult]:
        asked = []
        for n in nodes:
            if self._text(n) is None:
                yield QueryResult(n, -1, 0.0, "no text for this node")
            else:
                asked.append(n)
        errors: list[tuple[int, BaseException]] = []
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="annotate-openai") as pool:
            futures = {pool.submit(self.ask, n): n for n in asked}
            try:
                for future in as_completed(futures):
                    node = futures[future]
                    try:
                        reply = future.result()
                    except CancelledError:
                        continue
                    except Exception as exc:  # noqa: BLE001 - reported below, with the node
                        if self.on_error == "invalid":
                            yield QueryResult(node, -1, 0.0, f"<request failed: {exc}>", cacheable=False)
                            continue
                        if not errors:  # stop sending; let requests already in flight finish and be cached
                            for f in futures:
                                f.cancel()
                        errors.append((node, exc))
                        continue
                    yield self._to_result(node, reply)
            finally:
                for f in futures:
                    f.cancel()
        if errors:
            first = errors[0][1]
            raise AnnotatorError(
                f"{len(errors)} request(s) to {self.base_url} failed; answers received so far are cached. "
                f"First: {first}"
            ) from first

    def __repr__(self) -> str:
        return (
            f"OpenAIAnnotator(dataset={self.dataset_name!r}, model={self.model_name!r}, "
            f"base_url={self.base_url!r}, key_env={self.api_key_env!r})"
        )


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None


def _reply_confidence(reply: str) -> float:
    for obj in _json_objects(reply):
        for key, value in obj.items():
            if str(key).strip().lower() == "confidence" and isinstance(value, int | float) and value >= 0:
                value = float(value)
                return value if value <= 1.0 else min(value / 100.0, 1.0)
    return 1.0
