"""Multi-label metrics against scikit-learn and loops written here."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, average_precision_score, f1_score

from softloss_cli.metrics import EvalOutputs, compute_metrics
from softloss_cli.metrics import multilabel as ml
from softloss_cli.tasks import Task

SEEDS = (0, 1, 2)
SIZES = ((1, 1), (7, 3), (200, 10), (1000, 25))


def _random(seed: int, n: int, c: int, rate: float = 0.3, round_to: int | None = None):
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(n, c, generator=g, dtype=torch.float64)
    if round_to is not None:
        probs = torch.round(probs * round_to) / round_to  # many ties
    targets = (torch.rand(n, c, generator=g) < rate).to(torch.float32)
    return probs.float(), targets


def _sk_ap(probs, targets, c):
    y, s = targets.numpy(), probs.numpy().astype(np.float64)
    return [average_precision_score(y[:, j], s[:, j]) if y[:, j].sum() > 0 else float("nan") for j in range(c)]


# ---------------------------------------------------------------- average precision


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n", "c"), SIZES)
@pytest.mark.parametrize("round_to", [None, 10, 2])
def test_average_precision_matches_sklearn_with_ties(seed, n, c, round_to):
    probs, targets = _random(seed, n, c, round_to=round_to)
    got = ml.average_precision(probs, targets)
    ref = _sk_ap(probs, targets, c)
    for j in range(c):
        if np.isnan(ref[j]):
            assert torch.isnan(got[j])
        else:
            assert got[j].item() == pytest.approx(ref[j], abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_map_matches_sklearn_macro_over_categories_with_positives(seed):
    probs, targets = _random(seed, 300, 12, rate=0.1)
    targets[:, 3] = 0  # a category without positives: left out, not scored 0
    keep = targets.sum(0) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = average_precision_score(targets[:, keep].numpy(), probs[:, keep].numpy().astype(np.float64), average="macro")
    assert ml.mean_average_precision(probs, targets) == pytest.approx(ref, abs=1e-12)


def test_average_precision_edge_cases():
    # Perfect ranking gives 1; a single all-tied column gives the positive rate (one threshold).
    targets = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    scores = torch.tensor([[0.9, 0.5], [0.1, 0.5], [0.8, 0.5], [0.2, 0.5]])
    ap = ml.average_precision(scores, targets)
    assert ap[0].item() == 1.0 and ap[1].item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="mAP is undefined: no category has a positive sample"):
        ml.mean_average_precision(scores, torch.zeros(4, 2))


def test_average_precision_uses_order_only():
    probs, targets = _random(3, 100, 5)
    logits = torch.logit(probs.double().clamp(1e-6, 1 - 1e-6)).float() * 7 - 3
    assert torch.allclose(ml.average_precision(probs, targets), ml.average_precision(logits, targets), atol=1e-12)


# ---------------------------------------------------------------- thresholded


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n", "c"), SIZES)
@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.0, 1.0])
def test_f1_and_exact_match_match_sklearn(seed, n, c, threshold):
    probs, targets = _random(seed, n, c)
    probs[0, 0] = threshold  # on the threshold counts as active
    pred = (probs >= threshold).numpy().astype(int)
    y = targets.numpy().astype(int)
    assert ml.f1_micro(probs, targets, threshold) == pytest.approx(f1_score(y, pred, average="micro", zero_division=0), abs=1e-12)
    assert ml.f1_macro(probs, targets, threshold) == pytest.approx(f1_score(y, pred, average="macro", zero_division=0), abs=1e-12)
    assert ml.exact_match(probs, targets, threshold) == pytest.approx(accuracy_score(y, pred), abs=1e-12)


def test_f1_zero_division_and_all_empty():
    probs = torch.zeros(3, 2)
    targets = torch.zeros(3, 2)
    assert ml.f1_micro(probs, targets) == 0.0 and ml.f1_macro(probs, targets) == 0.0
    assert ml.exact_match(probs, targets) == 1.0  # nothing present, nothing predicted


def test_empty_fpr_and_mean_active_against_loops():
    probs, targets = _random(4, 500, 8, rate=0.1)
    targets[::5] = 0  # make sure some rows are empty
    p, y = probs.tolist(), targets.tolist()
    empty_rows = [i for i in range(len(y)) if sum(y[i]) == 0]
    fired = sum(1 for i in empty_rows if any(v >= 0.5 for v in p[i]))
    assert ml.empty_fpr(probs, targets) == pytest.approx(fired / len(empty_rows))
    assert ml.mean_active(probs) == pytest.approx(sum(sum(v >= 0.5 for v in row) for row in p) / len(p))
    assert ml.mean_active(probs, 0.9) == pytest.approx(sum(sum(v >= 0.9 for v in row) for row in p) / len(p))
    with pytest.raises(ValueError, match="empty_fpr is undefined: no sample has an empty target"):
        ml.empty_fpr(probs[:2], torch.ones(2, 8))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ml.f1_micro(torch.rand(3, 2), torch.full((3, 2), 0.5)), r"targets must be binary multi-hot"),
        (lambda: ml.f1_micro(torch.rand(3, 2), torch.zeros(3)), r"targets must be multi-hot \[N, C\] = \[3, 2\]"),
        (lambda: ml.exact_match(torch.rand(3, 2) + 1, torch.zeros(3, 2)), r"probs must be probabilities in \[0, 1\]"),
        (lambda: ml.mean_active(torch.rand(3, 2), threshold=2), r"threshold must be a number in \[0, 1\]"),
        (lambda: ml.average_precision(torch.zeros(3, 2, dtype=torch.int64), torch.zeros(3, 2)), "must be a floating-point tensor"),
        (lambda: ml.average_precision(torch.full((3, 2), float("nan")), torch.zeros(3, 2)), "scores contains NaN"),
        (lambda: ml.empty_fpr(torch.rand(0, 2), torch.zeros(0, 2)), "probs is empty"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------- metric group


def _outputs(logits, targets, activation):
    scores = torch.sigmoid(logits) if activation == "sigmoid" else torch.softmax(logits, 1)
    return EvalOutputs(logits, targets, scores, info={"activation": activation, "set_source": "logits"})


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_metric_group_keys_and_values(activation):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(400, 10, generator=g) * 3
    _, targets = _random(1, 400, 10, rate=0.15)
    targets[:60] = 0
    out = _outputs(logits, targets, activation)
    m = compute_metrics(out, Task("multilabel", 10))
    assert set(m) == {"map", "f1_micro", "f1_macro", "exact_match", "mean_active", "mean_labels", "empty_fpr"}
    assert m["map"] == pytest.approx(ml.mean_average_precision(out.scores.double(), targets), abs=1e-9)
    assert m["f1_micro"] == ml.f1_micro(out.scores, targets)
    assert m["empty_fpr"] == ml.empty_fpr(out.scores, targets)
    assert m["mean_labels"] == pytest.approx(targets.sum(1).mean().item())


def test_metric_group_ranks_sigmoid_by_logits_not_saturated_scores():
    # sigmoid(20) and sigmoid(30) are both exactly 1.0 in float32; the logits keep the order.
    logits = torch.tensor([[30.0], [20.0], [25.0], [-1.0]])
    targets = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    out = _outputs(logits, targets, "sigmoid")
    assert out.scores[0, 0] == out.scores[1, 0] == 1.0
    assert compute_metrics(out, Task("multilabel", 1))["map"] == 1.0
    assert ml.mean_average_precision(out.scores, targets) < 1.0


def test_metric_group_leaves_out_undefined_metrics():
    logits = torch.randn(5, 3)
    m = compute_metrics(_outputs(logits, torch.ones(5, 3), "sigmoid"), Task("multilabel", 3))
    assert "empty_fpr" not in m and "map" in m
    m = compute_metrics(_outputs(logits, torch.zeros(5, 3), "sigmoid"), Task("multilabel", 3))
    assert "map" not in m and m["empty_fpr"] >= 0


def test_metric_group_checks_class_count():
    with pytest.raises(ValueError, match="scores have 3 columns but the task has 4 categories"):
        compute_metrics(_outputs(torch.randn(5, 3), torch.zeros(5, 3), "sigmoid"), Task("multilabel", 4))


def test_softmax_cannot_activate_two_categories():
    # The point of the scenario: at 0.5, a softmax row has at most one active category.
    g = torch.Generator().manual_seed(2)
    out = _outputs(torch.randn(300, 6, generator=g) * 5, (torch.rand(300, 6, generator=g) < 0.4).float(), "softmax")
    assert ((out.scores >= 0.5).sum(1) <= 1).all()
    assert compute_metrics(out, Task("multilabel", 6))["mean_active"] <= 1.0
