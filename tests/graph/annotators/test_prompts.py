from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphspike_kd.graph.annotators.prompts import (
    build_messages,
    class_descriptions,
    class_display_names,
    normalise_name,
    parse_category,
    render_plain,
)

CORA = [
    "Theory",
    "Reinforcement_Learning",
    "Genetic_Algorithms",
    "Neural_Networks",
    "Probabilistic_Methods",
    "Case_Based",
    "Rule_Learning",
]
CITESEER = ["AI", "ML", "IR", "DB", "Agents", "HCI"]
WEBKB = ["course", "faculty", "project", "staff", "student"]


def test_display_names_and_descriptions_cover_the_shipped_datasets():
    assert class_display_names("cora", CORA)[1] == "Reinforcement Learning"
    assert class_display_names("Citeseer", CITESEER) == [
        "Artificial Intelligence",
        "Machine Learning",
        "Information Retrieval",
        "Databases",
        "Agents",
        "Human-Computer Interaction",
    ]
    for name in ("cornell", "texas", "washington", "wisconsin"):
        assert class_display_names(name, WEBKB) == ["Course", "Faculty", "Project", "Staff", "Student"]
        assert all(d.startswith("A university web page: ") for d in class_descriptions(name, WEBKB))
    assert len(set(class_descriptions("cora", CORA))) == 7
    # unknown dataset: fall back to the class names themselves
    assert class_display_names("mygraph", ["good_stuff", "bad"]) == ["good stuff", "bad"]


def test_messages_are_json_with_text_and_related():
    long_text = "word " * 1000
    msgs = build_messages(
        "citeseer", CITESEER, long_text, ["n1 " * 200, "n2"], max_text_chars=50, max_neighbour_chars=20
    )
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "Human-Computer Interaction" in msgs[0]["content"] and '"Category"' in msgs[0]["content"]
    payload = json.loads(msgs[1]["content"])
    assert len(payload["Text"]) == 50 and payload["Text"].endswith("…")
    assert len(payload["Related"]) == 2 and len(payload["Related"][0]) == 20
    plain = render_plain(build_messages("cora", CORA, "a paper", style="label"))
    assert plain.endswith("Category:") and "Related" not in plain and "name only" in plain
    with pytest.raises(ValueError, match="style"):
        build_messages("cora", CORA, "x", style="free")


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('{"Reasoning": "r", "Category": "Neural Networks"}', 3),
        ('{"Reasoning": "r", "Category": "neural_networks"}', 3),
        ('Sure! ```json\n{"reasoning": "a {nested} brace", "category": "Theory"}\n```', 0),
        ('{"Reasoning": "mentions Theory", "Category": "Quantum"}', -1),  # JSON names no class: invalid
        ('{"Category": ["Rule Learning"]}', 6),
        ('{"Category": 3}', -1),  # an id is not a class name
        ("The answer is Case Based.", 5),
        ("Either Theory or Rule_Learning.", -1),  # two classes named: invalid, not the first one
        ("", -1),
        ("Neural networking hardware", -1),  # a prefix of a word is not a class name
    ],
)
def test_parse_category(reply, expected):
    assert parse_category(reply, "cora", CORA) == expected


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80))
def test_parse_category_never_invents_a_class(reply):
    label = parse_category(reply, "citeseer", CITESEER)
    if label >= 0:
        names = [CITESEER[label], class_display_names("citeseer", CITESEER)[label]]
        assert any(normalise_name(n) in normalise_name(reply) for n in names)
