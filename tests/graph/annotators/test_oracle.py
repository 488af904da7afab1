from __future__ import annotations

import numpy as np
import pytest
import torch

from graphspike_kd.graph.annotators import OracleAnnotator, get_annotator
from graphspike_kd.graph.annotators.oracle import confusion_matrix

from .conftest import make_tag


def _big_tag(n=3000, c=6, seed=0):
    data = make_tag(texts=[f"t{i}" for i in range(n)])
    data.y = torch.from_numpy(np.random.default_rng(seed).integers(0, c, n))
    return data


def test_accuracy_is_reached_and_answers_do_not_depend_on_the_request():
    data = _big_tag()
    ann = get_annotator("oracle", dataset=data, accuracy=0.7, seed=3)
    nodes = np.arange(3000)
    out = ann.annotate(nodes)
    acc = out.accuracy(data.y)
    assert abs(acc - 0.7) < 0.03  # binomial sd ~ 0.008
    assert out.n_invalid == 0 and np.allclose(out.confidence, 0.7)
    fresh = OracleAnnotator(data, accuracy=0.7, seed=3)
    np.testing.assert_array_equal(fresh.annotate(nodes[::-1][:500]).labels, out.labels[::-1][:500])
    other_seed = OracleAnnotator(data, accuracy=0.7, seed=4).annotate(nodes).labels
    assert (other_seed != out.labels).any()
    assert OracleAnnotator(data, accuracy=1.0).annotate(nodes).accuracy(data.y) == 1.0
    assert OracleAnnotator(data, accuracy=0.0).annotate(nodes).accuracy(data.y) == 0.0


def test_confusion_matrix_shapes_the_errors():
    data = _big_tag()
    y = data.y.numpy()
    confusion = np.zeros((6, 6))
    confusion[np.arange(6), (np.arange(6) + 1) % 6] = 1.0  # every error goes to the next class
    out = OracleAnnotator(data, accuracy=0.5, confusion=confusion).annotate(np.arange(3000))
    wrong = out.labels != y
    assert wrong.any() and (out.labels[wrong] == (y[wrong] + 1) % 6).all()
    estimated = confusion_matrix(y, out.labels, 6)
    np.testing.assert_allclose(estimated.sum(1), 1.0)
    assert np.allclose(np.diag(estimated), 0.5, atol=0.05)
    with pytest.raises(ValueError, match=r"\[6, 6\]"):
        OracleAnnotator(data, confusion=np.ones((3, 3)))
    with pytest.raises(ValueError, match="accuracy"):
        OracleAnnotator(data, accuracy=1.5)
