"""Every prompt template and class description used by the annotators, in one place.

Class metadata is keyed by dataset and by the class names the loaders use (Cora: the LINQS names such
as ``Neural_Networks``; Citeseer: ``AI, Agents, DB, HCI, IR, ML``; WebKB: ``student, course, faculty,
project, staff``), matched case-insensitively and ignoring ``_``/``-``/spaces, so any class order works.
Unknown datasets or classes fall back to the class name itself (underscores turned into spaces).

Two prompt styles share one layout, after the PKD paper's annotation prompt (Table 9):

- ``"json"`` (chat models over HTTP): the system message lists the categories and asks for a JSON answer
  ``{"Reasoning": ..., "Category": ...}`` with nothing outside the JSON; :func:`parse_category` reads it.
- ``"label"`` (log-likelihood scoring by the ``hf`` backend): the same system message asks for the
  category name only; the assistant turn is then scored for each category name, so nothing is parsed.

The user message is a JSON object ``{"Text": ..., "Related": [...]}``: the node's text, then the texts
of its context neighbours (DNS or graph neighbours), each truncated to a character budget.
Every prompt hash includes :data:`PROMPT_VERSION` and the rendered prompt itself, so cached answers made
with an older template are never reused by mistake.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "PROMPT_VERSION",
    "DatasetPrompt",
    "build_messages",
    "class_lookup",
    "class_descriptions",
    "class_display_names",
    "dataset_prompt",
    "normalise_name",
    "parse_category",
    "render_plain",
]

#: bump when a template changes meaning (it is part of every prompt, hence of every cache key)
PROMPT_VERSION = "v1"


@dataclass(frozen=True)
class DatasetPrompt:
    """How to talk about one dataset: what a node is and what each class means."""

    item: str  # "paper", "web page"
    domain: str  # expertise the system prompt claims
    classes: dict[str, tuple[str, str]]  # normalised class name -> (display name, description)
    description_template: str = "A {item} about {description}."


def normalise_name(name: str) -> str:
    """Canonical class-name form: lower case; ``_``, ``-``, spaces and outer punctuation removed."""
    return re.sub(r"[\s_\-]+", "", str(name).strip().strip("\"'`.,:;*").lower())


# (class name as the loaders spell it, display name shown to / scored by the LLM, description embedded)
_CORA_CLASSES = [
    (
        "Case_Based",
        "Case Based",
        "case-based reasoning: solving new problems by adapting the solutions of similar past cases",
    ),
    (
        "Genetic_Algorithms",
        "Genetic Algorithms",
        "genetic algorithms and evolutionary computation: populations, mutation, crossover, fitness",
    ),
    (
        "Neural_Networks",
        "Neural Networks",
        "neural networks: artificial neurons, backpropagation, connectionist learning",
    ),
    (
        "Probabilistic_Methods",
        "Probabilistic Methods",
        "probabilistic methods: Bayesian networks, graphical models, probabilistic inference",
    ),
    (
        "Reinforcement_Learning",
        "Reinforcement Learning",
        "reinforcement learning: agents learning from rewards, Markov decision processes, Q-learning",
    ),
    (
        "Rule_Learning",
        "Rule Learning",
        "rule learning: inducing symbolic rules and decision trees, inductive logic programming",
    ),
    ("Theory", "Theory", "computational learning theory: PAC learning, sample complexity, mistake bounds"),
]
_CITESEER_CLASSES = [
    (
        "AI",
        "Artificial Intelligence",
        "artificial intelligence: knowledge representation, planning, logic, reasoning and search",
    ),
    (
        "ML",
        "Machine Learning",
        "machine learning: learning algorithms, classification, neural networks, statistical learning",
    ),
    (
        "IR",
        "Information Retrieval",
        "information retrieval: search engines, document ranking, text indexing and web search",
    ),
    ("DB", "Databases", "databases: query processing, data management, transactions, data mining"),
    (
        "Agents",
        "Agents",
        "multi-agent systems: autonomous software agents, agent communication and negotiation",
    ),
    (
        "HCI",
        "Human-Computer Interaction",
        "human-computer interaction: user interfaces, usability, user studies, interaction design",
    ),
]
_WEBKB_CLASSES = [
    ("student", "Student", "a student's personal home page"),
    ("faculty", "Faculty", "a faculty member's home page: a professor's research, publications and teaching"),
    ("course", "Course", "a course web page: lectures, syllabus, assignments and homework"),
    ("project", "Project", "a research project page: its goals, members and publications"),
    ("staff", "Staff", "a staff member's home page"),
]


def _classes(entries: list[tuple[str, str, str]]) -> dict[str, tuple[str, str]]:
    return {normalise_name(name): (display, description) for name, display, description in entries}


_DATASETS: dict[str, DatasetPrompt] = {
    "cora": DatasetPrompt(item="paper", domain="machine learning research", classes=_classes(_CORA_CLASSES)),
    "citeseer": DatasetPrompt(
        item="paper", domain="computer science research", classes=_classes(_CITESEER_CLASSES)
    ),
}
_WEBKB = DatasetPrompt(
    item="web page",
    domain="university web sites",
    classes=_classes(_WEBKB_CLASSES),
    description_template="A university web page: {description}.",
)
for _name in ("cornell", "texas", "washington", "wisconsin"):
    _DATASETS[_name] = _WEBKB

_GENERIC = DatasetPrompt(item="item", domain="the subject of this data set", classes={})


def dataset_prompt(dataset_name: str) -> DatasetPrompt:
    """The :class:`DatasetPrompt` of ``dataset_name`` (case-insensitive); a generic one if unknown."""
    return _DATASETS.get(normalise_name(dataset_name), _GENERIC)


def class_display_names(dataset_name: str, class_names: Sequence[str]) -> list[str]:
    """Human-readable names (``"DB"`` → ``"Databases"``), used in prompts and scored by the ``hf`` backend."""
    meta = dataset_prompt(dataset_name).classes
    out = []
    for c in class_names:
        entry = meta.get(normalise_name(c))
        out.append(entry[0] if entry else str(c).replace("_", " ").strip())
    if len({normalise_name(d) for d in out}) != len(out):
        raise ValueError(f"class display names collide for {dataset_name!r}: {out}")
    return out


def class_descriptions(dataset_name: str, class_names: Sequence[str]) -> list[str]:
    """One-sentence class descriptions, embedded by the ``embedding`` backend."""
    ds = dataset_prompt(dataset_name)
    out = []
    for c in class_names:
        entry = ds.classes.get(normalise_name(c))
        desc = entry[1] if entry else str(c).replace("_", " ").strip()
        out.append(ds.description_template.format(item=ds.item, description=desc))
    return out


def _truncate(text: str, max_chars: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


def build_messages(
    dataset_name: str,
    class_names: Sequence[str],
    text: str,
    neighbour_texts: Sequence[str] = (),
    *,
    style: str = "json",
    max_text_chars: int = 1500,
    max_neighbour_chars: int = 300,
) -> list[dict[str, str]]:
    """Chat messages (system + user) asking for the category of one node.

    Args:
        dataset_name (str): picks the item noun and the class names shown.
        class_names (Sequence[str]): the dataset's classes, in label-id order.
        text (str): the node's text (whitespace collapsed, cut at ``max_text_chars``).
        neighbour_texts (Sequence[str]): context nodes' texts, each cut at ``max_neighbour_chars``.
            (default: :obj:`()`)
        style (str): ``"json"`` (answer as JSON with Reasoning and Category) or ``"label"`` (answer
            with the category name only). (default: :obj:`"json"`)
    """
    ds = dataset_prompt(dataset_name)
    names = class_display_names(dataset_name, class_names)
    listing = ", ".join(names)
    related = (
        ""
        if not neighbour_texts
        else (f', then "Related": the texts of related {ds.item}s, which often share its category')
    )
    intro = (
        f"You are an expert in {ds.domain}. Classify a {ds.item} into exactly one of "
        f'these categories: {listing}. The user gives a JSON object with "Text": the {ds.item}\'s '
        f"text{related}."
    )
    if style == "json":
        system = (
            f'{intro} Answer with a JSON object {{"Reasoning": "...", "Category": "..."}} where '
            "Category is one of the category names exactly as listed and the reasoning is at most 100 words. "
            "Write nothing outside the JSON object."
        )
    elif style == "label":
        system = f"{intro} Answer with the category name only."
    else:
        raise ValueError(f"unknown prompt style {style!r}; use 'json' or 'label'")
    payload: dict[str, object] = {"Text": _truncate(text, max_text_chars)}
    if neighbour_texts:
        payload["Related"] = [_truncate(t, max_neighbour_chars) for t in neighbour_texts]
    user = json.dumps(payload, ensure_ascii=False)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def render_plain(messages: Sequence[dict[str, str]], *, answer_prefix: str = "Category:") -> str:
    """Flatten chat messages into one completion prompt, for models or endpoints without a chat template."""
    parts = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(parts) + f"\n\n{answer_prefix}"


_JSON_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


def class_lookup(dataset_name: str, class_names: Sequence[str]) -> dict[str, int]:
    """Map every accepted spelling of a class (raw or display name, normalised) to its id."""
    names = class_display_names(dataset_name, class_names)
    lookup: dict[str, int] = {}
    for i, (raw, disp) in enumerate(zip(class_names, names, strict=True)):
        lookup.setdefault(normalise_name(raw), i)
        lookup.setdefault(normalise_name(disp), i)
    return lookup


def parse_category(reply: str, dataset_name: str, class_names: Sequence[str]) -> int:
    """Class id named by a model's reply, or ``-1`` if it names no valid class.

    Rules, in order: (1) the first JSON object in the reply that has a ``Category`` key (any case): its
    value must equal a class's display name or raw name (ignoring case, ``_``, ``-`` and spaces), else
    ``-1``; (2) without such an object, the reply must mention exactly one class (display or raw name
    as a whole word); zero or several → ``-1``. Nothing is ever guessed.
    """
    names = class_display_names(dataset_name, class_names)
    lookup = class_lookup(dataset_name, class_names)
    for candidate in _json_objects(reply):
        for key, value in candidate.items():
            if str(key).strip().lower() == "category":
                if isinstance(value, list) and len(value) == 1:
                    value = value[0]
                return lookup.get(normalise_name(str(value)), -1) if isinstance(value, str) else -1
    found: set[int] = set()
    text = reply.lower()
    for i, (raw, disp) in enumerate(zip(class_names, names, strict=True)):
        for name in {raw, disp}:
            pattern = r"(?<![a-z0-9])" + r"[\s_\-]*".join(map(re.escape, re.split(r"[\s_\-]+", name.lower())))
            if re.search(pattern + r"(?![a-z0-9])", text):
                found.add(i)
    return found.pop() if len(found) == 1 else -1


_JSON_SPECIAL = re.compile(r'[{\[]+|[}\]]+|"')  # what matters inside brackets (runs at once)
_JSON_OPEN = re.compile(r"[{\[]+")  # what matters outside them
_STRING_SPECIAL = re.compile(r'["\\]')  # what matters inside a string

#: JSON nested deeper than this inside a reply is not decoded (no model answer needs it; it would only
#: cost recursion)
MAX_JSON_DEPTH = 32


def _json_objects(reply: str, max_depth: int = MAX_JSON_DEPTH) -> list[dict]:
    """The JSON objects embedded in ``reply``, outermost first, in order of their opening brace.

    One pass over the reply's brackets, quotes and backslashes matches brackets: outside any bracket a
    quote is prose and ignored; inside, strings (with their escapes) are skipped. Every balanced
    ``{...}`` span nested at most ``max_depth`` deep becomes a candidate; a candidate that decodes is
    returned together with the objects nested in it (its inner spans are not decoded again), one that
    does not is dropped while the objects inside it are still tried. Each character is decoded at most
    ``max_depth`` times, so the cost is linear in the reply's length, and nothing recurses deeper than
    ``max_depth``.
    """
    spans: list[tuple[int, int]] = []  # (start, end) of balanced objects, in closing order
    stack: list[tuple[str, int]] = []  # (bracket, start position), at most max_depth deep
    overflow = 0  # brackets open beyond max_depth (not tracked one by one)
    n_deep = 0  # entries of `stack` (from the bottom) known to contain nesting deeper than max_depth
    in_string = False
    pos, n = 0, len(reply)
    while pos < n:
        if in_string:
            match = _STRING_SPECIAL.search(reply, pos)
            if match is None:
                break
            pos = match.end()
            if match.group() == "\\":
                pos += 1  # skip the escaped character
            else:
                in_string = False
            continue
        match = (_JSON_SPECIAL if stack else _JSON_OPEN).search(reply, pos)
        if match is None:
            break
        i, run = match.start(), match.group()
        pos = match.end()
        ch = run[0]
        if ch == '"':
            in_string = True  # only searched for inside brackets: outside, a quote is prose
        elif ch == "{" or ch == "[":  # a run of opening brackets
            room = max_depth - len(stack)
            for j, opening in enumerate(run[:room]):
                stack.append((opening, i + j))
            if len(run) > room:
                overflow += len(run) - max(room, 0)
                n_deep = len(stack)  # every open bracket now contains too-deep nesting
        else:  # a run of closing brackets
            skip = min(overflow, len(run))
            overflow -= skip
            for j in range(skip, len(run)):
                if not stack:
                    break
                if run[j] == "}":
                    while stack:  # close the innermost '{' (an unclosed '[' inside it is dropped)
                        top, start = stack.pop()
                        deep = n_deep > len(stack)
                        n_deep = min(n_deep, len(stack))
                        if top == "{":
                            if not deep:
                                spans.append((start, i + j + 1))
                            break
                elif stack[-1][0] == "[":
                    stack.pop()
                    n_deep = min(n_deep, len(stack))
    out: list[tuple[int, dict]] = []
    covered_until = -1
    for start, end in sorted(spans):
        if start < covered_until:
            continue  # inside an object already decoded (its nested objects come from the decoded value)
        try:
            obj = json.loads(reply[start:end])
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            out.extend((start, o) for o in _nested_dicts(obj, max_depth))
            covered_until = end
    return [o for _, o in out]


def _nested_dicts(obj: dict, max_depth: int) -> list[dict]:
    """``obj`` and every dict nested in it (breadth first, at most ``max_depth`` levels)."""
    found, level = [], [obj]
    for _ in range(max_depth):
        if not level:
            break
        nxt = []
        for value in level:
            if isinstance(value, dict):
                found.append(value)
                nxt.extend(value.values())
            elif isinstance(value, list):
                nxt.extend(value)
        level = nxt
    return found
