"""General classification metrics against scikit-learn or float64 loops written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, log_loss, top_k_accuracy_score

from softloss_cli.metrics import EvalOutputs, compute_metrics
from softloss_cli.metrics import classification as cm
from softloss_cli.tasks import Task

SEEDS = (0, 1, 2)
SIZES = ((1, 1), (7, 2), (300, 3), (1000, 10), (2000, 50))  # (N, C)


def _random(seed: int, n: int, c: int, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    targets = torch.randint(0, c, (n,), generator=g)
    return logits, torch.softmax(logits, dim=1), targets


# ---------------------------------------------------------------- reference loops (float64)


def _ref_argmax(row: list[float]) -> int:
    best = 0
    for c in range(1, len(row)):
        if row[c] > row[best]:
            best = c
    return best


def _ref_brier(probs: torch.Tensor, targets: torch.Tensor) -> float:
    p, y = probs.tolist(), targets.tolist()
    total = 0.0
    for i in range(len(p)):
        total += sum((p[i][c] - (1.0 if c == y[i] else 0.0)) ** 2 for c in range(len(p[i])))
    return total / len(p)


def _ref_bins(probs: torch.Tensor, targets: torch.Tensor, n_bins: int):
    """Explicit per-bin loop: bin b holds b/M < conf <= (b+1)/M, conf = 0 in bin 0."""
    p, y = probs.tolist(), targets.tolist()
    conf = [max(row) for row in p]
    correct = [1.0 if _ref_argmax(row) == t else 0.0 for row, t in zip(p, y)]
    out = []
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(len(p)) if (lo < conf[i] <= hi) or (b == 0 and conf[i] == 0.0)]
        out.append(members)
    return conf, correct, out


def _ref_ece(probs: torch.Tensor, targets: torch.Tensor, n_bins: int) -> float:
    conf, correct, bins = _ref_bins(probs, targets, n_bins)
    n = len(conf)
    total = 0.0
    for members in bins:
        if not members:
            continue
        acc = sum(correct[i] for i in members) / len(members)
        mean_conf = sum(conf[i] for i in members) / len(members)
        total += len(members) / n * abs(acc - mean_conf)
    return total


def _ref_topk(scores: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    s, y = scores.tolist(), targets.tolist()
    hits = 0
    for row, t in zip(s, y):
        rank = sum(1 for c, v in enumerate(row) if v > row[t] or (v == row[t] and c < t))
        hits += rank < k
    return hits / len(s)


def _ref_entropy(probs: torch.Tensor) -> float:
    rows = probs.tolist()
    return sum(-sum(v * math.log(v) for v in row if v > 0) for row in rows) / len(rows)


# ---------------------------------------------------------------- random inputs vs references


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n,c", SIZES)
def test_accuracy_matches_sklearn(seed, n, c):
    logits, probs, y = _random(seed, n, c)
    expected = accuracy_score(y.numpy(), logits.numpy().argmax(axis=1))
    assert cm.accuracy(logits, y) == pytest.approx(expected, abs=1e-12)
    assert cm.accuracy(probs.float(), y) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n,c", [s for s in SIZES if s[1] >= 2])
def test_nll_matches_sklearn_log_loss(seed, n, c):
    logits, probs, y = _random(seed, n, c)
    expected = log_loss(y.numpy(), probs.numpy(), labels=np.arange(c))
    assert cm.nll(logits, y) == pytest.approx(expected, rel=1e-9)
    assert cm.nll(logits.float(), y) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n,c", SIZES)
def test_brier_matches_loop(seed, n, c):
    _, probs, y = _random(seed, n, c)
    assert cm.brier(probs, y) == pytest.approx(_ref_brier(probs, y), rel=1e-9, abs=1e-12)
    assert cm.brier(probs.float(), y) == pytest.approx(_ref_brier(probs, y), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n,c", SIZES)
@pytest.mark.parametrize("n_bins", (1, 10, 15))
def test_ece_and_bins_match_loop(seed, n, c, n_bins):
    _, probs, y = _random(seed, n, c, scale=2.0)
    assert cm.ece(probs, y, n_bins) == pytest.approx(_ref_ece(probs, y, n_bins), abs=1e-12)
    conf, correct, bins = _ref_bins(probs, y, n_bins)
    rb = cm.reliability_bins(probs, y, n_bins)
    assert rb.count.tolist() == [len(m) for m in bins]
    for b, members in enumerate(bins):
        if members:
            assert rb.confidence[b].item() == pytest.approx(sum(conf[i] for i in members) / len(members))
            assert rb.accuracy[b].item() == pytest.approx(sum(correct[i] for i in members) / len(members))
        else:
            assert math.isnan(rb.confidence[b].item()) and math.isnan(rb.accuracy[b].item())


@pytest.mark.parametrize("seed", SEEDS)
def test_ece_with_confidences_on_bin_edges(seed):
    """Quantised probabilities put many confidences exactly on the edges m/M."""
    g = torch.Generator().manual_seed(seed)
    n, m = 2000, 20
    j = torch.randint(0, m + 1, (n,), generator=g).to(torch.float64)
    p0 = j / m
    probs = torch.stack([p0, 1.0 - p0], dim=1)
    y = torch.randint(0, 2, (n,), generator=g)
    for n_bins in (4, 10, 20):
        assert cm.ece(probs, y, n_bins) == pytest.approx(_ref_ece(probs, y, n_bins), abs=1e-12)
        assert cm.reliability_bins(probs, y, n_bins).count.tolist() == [
            len(b) for b in _ref_bins(probs, y, n_bins)[2]
        ]


@pytest.mark.filterwarnings("ignore:.k. .* greater than or equal to:UserWarning")
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("c", (3, 10, 50))
def test_topk_matches_sklearn_without_ties(seed, c):
    logits, _, y = _random(seed, 1500, c)
    for k in sorted({1, 2, 3, 5, c - 1, c} & set(range(1, c + 1))):
        expected = top_k_accuracy_score(y.numpy(), logits.numpy(), k=k, labels=np.arange(c))
        assert cm.topk_accuracy(logits, y, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("c", (1, 2, 4, 12))
def test_topk_matches_loop_with_ties(seed, c):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 3, (800, c), generator=g).float()  # many ties
    y = torch.randint(0, c, (800,), generator=g)
    for k in range(1, c + 1):
        assert cm.topk_accuracy(scores, y, k) == pytest.approx(_ref_topk(scores, y, k), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n,c", SIZES)
def test_mean_max_prob_and_entropy_match_loop(seed, n, c):
    _, probs, _ = _random(seed, n, c)
    assert cm.mean_max_prob(probs) == pytest.approx(sum(max(r) for r in probs.tolist()) / n, rel=1e-12)
    assert cm.mean_entropy(probs) == pytest.approx(_ref_entropy(probs), rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------- edge cases


def test_one_class():
    n = 5
    scores = torch.ones(n, 1)
    logits = torch.randn(n, 1)
    y = torch.zeros(n, dtype=torch.int64)
    assert cm.accuracy(scores, y) == 1.0
    assert cm.topk_accuracy(scores, y, 1) == 1.0
    assert cm.nll(logits, y) == 0.0
    assert cm.brier(scores, y) == 0.0
    assert cm.ece(scores, y) == 0.0
    assert cm.mean_max_prob(scores) == 1.0
    assert cm.mean_entropy(scores) == 0.0


def test_argmax_ties_take_the_first_class():
    scores = torch.tensor([[0.4, 0.4, 0.2], [0.4, 0.4, 0.2], [0.1, 0.45, 0.45]], dtype=torch.float64)
    # float64: float32(0.4) is slightly above the edge 0.4 and would land in the next bin.
    y = torch.tensor([0, 1, 2])
    assert cm.accuracy(scores, y) == pytest.approx(1 / 3)  # only row 0 counts as correct
    # ECE uses the same prediction: row 0 correct (conf 0.4), row 1 and 2 wrong.
    rb = cm.reliability_bins(scores, y, n_bins=10)
    assert rb.count[3].item() == 2 and rb.accuracy[3].item() == 0.5  # conf 0.4 is in (0.3, 0.4]
    assert rb.count[4].item() == 1 and rb.accuracy[4].item() == 0.0  # conf 0.45 is in (0.4, 0.5]


def test_topk_ties_break_by_class_index():
    scores = torch.tensor([[1.0, 1.0, 1.0, 0.0], [2.0, 1.0, 1.0, 0.0], [2.0, 2.0, 1.0, 1.0]])
    # row 0: classes 0 and 1 tie with class 2 and come first -> rank 2, a hit for k >= 3.
    # row 1: class 0 above, class 1 ties and comes first -> rank 2.  row 2: three before class 3.
    y = torch.tensor([2, 2, 3])
    assert cm.topk_accuracy(scores, y, 1) == 0.0
    assert cm.topk_accuracy(scores, y, 2) == 0.0
    assert cm.topk_accuracy(scores, y, 3) == pytest.approx(2 / 3)
    assert cm.topk_accuracy(scores, y, 4) == 1.0
    # k = 1 is accuracy (argmax takes the first of tied classes), also with ties.
    g = torch.Generator().manual_seed(0)
    tied = torch.randint(0, 2, (500, 5), generator=g).float()
    yt = torch.randint(0, 5, (500,), generator=g)
    assert cm.topk_accuracy(tied, yt, 1) == cm.accuracy(tied, yt)
    # A collapsed model (all scores equal) is right only for class 0 at k = 1, classes < k in general.
    yz = torch.tensor([0, 2, 4, 5])
    assert cm.topk_accuracy(torch.zeros(4, 6), yz, 1) == pytest.approx(1 / 4)
    assert cm.topk_accuracy(torch.zeros(4, 6), yz, 3) == pytest.approx(2 / 4)


def test_ece_bin_edges_are_right_inclusive():
    probs = torch.tensor([[0.75, 0.25], [0.5, 0.5], [1.0, 0.0], [0.25, 0.75]], dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 0])
    rb = cm.reliability_bins(probs, y, n_bins=4)  # edges 0, .25, .5, .75, 1
    # 0.5 -> bin 1 (0.25, 0.5]; 0.75 (twice) -> bin 2 (0.5, 0.75]; 1.0 -> bin 3.
    assert rb.count.tolist() == [0, 1, 2, 1]
    assert rb.accuracy[1].item() == 0.0  # tie [0.5, 0.5] predicts class 0, target 1
    assert rb.accuracy[2].item() == 0.5
    assert rb.accuracy[3].item() == 1.0
    expected = (1 / 4) * 0.5 + (2 / 4) * abs(0.5 - 0.75) + (1 / 4) * 0.0
    assert cm.ece(probs, y, n_bins=4) == pytest.approx(expected, abs=1e-15)


def test_empty_bins_contribute_nothing():
    probs = torch.tensor([[0.95, 0.05]] * 10, dtype=torch.float64)
    y = torch.tensor([0] * 9 + [1])
    assert cm.ece(probs, y, n_bins=15) == pytest.approx(0.05, abs=1e-12)  # |0.9 - 0.95|
    rb = cm.reliability_bins(probs, y, n_bins=15)
    assert rb.count.sum().item() == 10 and int((rb.count > 0).sum()) == 1
    assert torch.isnan(rb.confidence[rb.count == 0]).all()


def test_all_correct_and_all_wrong():
    c, n = 4, 12
    y = torch.arange(n) % c
    onehot = torch.nn.functional.one_hot(y, c).double()
    wrong = torch.nn.functional.one_hot((y + 1) % c, c).double()
    assert cm.accuracy(onehot, y) == 1.0 and cm.accuracy(wrong, y) == 0.0
    assert cm.brier(onehot, y) == 0.0 and cm.brier(wrong, y) == 2.0
    assert cm.ece(onehot, y) == 0.0 and cm.ece(wrong, y) == 1.0
    assert cm.topk_accuracy(wrong, y, 1) == 0.0
    runner_up = wrong + 0.5 * onehot  # the true class second everywhere
    assert cm.topk_accuracy(runner_up, y, 1) == 0.0 and cm.topk_accuracy(runner_up, y, 2) == 1.0
    uniform = torch.full((n, c), 1 / c)
    assert cm.brier(uniform, y) == pytest.approx(1 - 1 / c)


def test_entropy_finite_with_exact_zeros():
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    value = cm.mean_entropy(probs)
    assert math.isfinite(value)
    assert value == pytest.approx(math.log(2) / 3, rel=1e-7)
    assert cm.mean_entropy(torch.full((3, 8), 1 / 8)) == pytest.approx(math.log(8), rel=1e-7)


def test_nll_stable_for_huge_logits():
    logits = torch.tensor([[1e4, -1e4], [-1e4, 1e4]])
    y = torch.tensor([1, 1])
    assert cm.nll(logits, y) == pytest.approx(1e4, rel=1e-12)  # (2e4 + 0) / 2
    assert cm.nll(logits.to(torch.bfloat16), y) == pytest.approx(1e4, rel=1e-2)


def test_integer_target_dtypes_are_accepted():
    _, probs, y = _random(0, 50, 5)
    assert cm.brier(probs, y.to(torch.int32)) == cm.brier(probs, y)
    assert cm.accuracy(probs, y.to(torch.uint8)) == cm.accuracy(probs, y)


# ---------------------------------------------------------------- invalid arguments


P = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
Y = torch.tensor([0, 1])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: cm.accuracy(P, Y[:1]), r"shape mismatch: 2 rows of scores but 1 targets"),
        (lambda: cm.accuracy(P[0], Y), r"scores must be 2-D \[N, C\], got shape \(2,\)"),
        (lambda: cm.accuracy(P, Y[:, None]), r"targets must be 1-D"),
        (lambda: cm.accuracy(P, Y.float()), r"targets must be an integer tensor.*torch.float32"),
        (lambda: cm.accuracy(P, Y.bool()), r"targets must be an integer tensor.*torch.bool"),
        (lambda: cm.accuracy(P.long(), Y), r"scores must be a floating-point tensor, got dtype torch.int64"),
        (lambda: cm.accuracy(P.numpy(), Y), r"scores must be a torch.Tensor, got ndarray"),
        (lambda: cm.accuracy(torch.empty(0, 3), Y[:0]), r"scores is empty: no samples"),
        (lambda: cm.accuracy(torch.empty(2, 0), Y), r"scores has no classes"),
        (lambda: cm.accuracy(P, torch.tensor([0, 2])), r"targets must be class indices in \[0, 1\] for C=2"),
        (lambda: cm.accuracy(P, torch.tensor([-1, 0])), r"got values from -1 to 0"),
        (lambda: cm.accuracy(torch.tensor([[0.1, float("nan")]]), Y[:1]), r"scores contains NaN"),
        (lambda: cm.topk_accuracy(P, Y, 0), r"k must be in \[1, C\] = \[1, 2\], got 0"),
        (lambda: cm.topk_accuracy(P, Y, 3), r"k must be in \[1, C\] = \[1, 2\], got 3"),
        (lambda: cm.topk_accuracy(P, Y, 1.0), r"k must be an int, got float"),
        (lambda: cm.nll(torch.tensor([[0.0, float("inf")]]), Y[:1]), r"logits must be finite"),
        (lambda: cm.nll(P, Y[:1]), r"shape mismatch"),
        (lambda: cm.brier(P * 2, Y), r"probs must be probabilities in \[0, 1\], got values from 0.4 to 1.6"),
        (lambda: cm.brier(P - 0.5, Y), r"probs must be probabilities in \[0, 1\]"),
        (
            lambda: cm.brier(torch.tensor([[0.5, 0.6]]), Y[:1]),
            r"rows must sum to 1 \(max \|row sum - 1\| = 0.1",
        ),
        (lambda: cm.brier(P, torch.tensor([0, 5])), r"targets must be class indices in \[0, 1\]"),
        (lambda: cm.ece(P, Y, n_bins=0), r"n_bins must be >= 1, got 0"),
        (lambda: cm.ece(P, Y, n_bins=2.5), r"n_bins must be an int, got float"),
        (lambda: cm.reliability_bins(P, Y[:1]), r"shape mismatch"),
        (lambda: cm.mean_max_prob(torch.tensor([[0.2, 0.2]])), r"rows must sum to 1"),
        (lambda: cm.mean_entropy(torch.empty(0, 2)), r"probs is empty"),
        (lambda: cm.mean_entropy(torch.tensor([[float("inf"), 0.0]])), r"probs must be finite"),
    ],
)
def test_invalid_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_validate_args_false_skips_checks():
    # Non-normalised rows are refused with checks on and computed as given with them off.
    bad = torch.tensor([[0.5, 0.6]])
    with pytest.raises(ValueError):
        cm.brier(bad, Y[:1])
    assert cm.brier(bad, Y[:1], validate_args=False) == pytest.approx(0.25 + 0.36)


# ---------------------------------------------------------------- metric group


def _outputs(seed: int, n: int, c: int) -> EvalOutputs:
    logits, probs, y = _random(seed, n, c)
    return EvalOutputs(logits=logits.float(), targets=y, scores=probs.float())


BASE = {"accuracy", "nll", "brier", "ece", "mce", "rmsce", "mean_max_prob", "mean_entropy"}


@pytest.mark.parametrize(
    "c, topk",
    [
        (1, set()),
        (2, {"topk_acc_k1"}),
        (3, {"topk_acc_k1", "topk_acc_k2"}),
        (5, {"topk_acc_k1", "topk_acc_k2", "topk_acc_k3"}),
        (6, {"topk_acc_k1", "topk_acc_k2", "topk_acc_k3", "topk_acc_k5"}),
    ],
)
def test_compute_metrics_names(monkeypatch, c, topk):
    import softloss_cli.metrics as metrics_pkg

    ours = [g for g in metrics_pkg._GROUPS if g[2] is cm.classification_metrics]
    assert len(ours) == 1 and ours[0][0] == ("multiclass", "ordinal")
    outputs = _outputs(0, 200, c)
    full = compute_metrics(outputs, Task("multiclass", c))  # other families may add names
    monkeypatch.setattr(metrics_pkg, "_GROUPS", ours)
    for task in (Task("multiclass", c), Task("ordinal", c), Task("partial", c, base_kind="multiclass")):
        result = compute_metrics(outputs, task)
        assert set(result) == BASE | topk
        assert all(isinstance(v, float) for v in result.values())
    assert compute_metrics(outputs, Task("multilabel", c)) == {}
    for name, value in result.items():
        assert full[name] == value


def test_group_values_match_functions():
    outputs = _outputs(3, 500, 7)
    result = cm.classification_metrics(outputs, Task("multiclass", 7))
    p, y = outputs.scores, outputs.targets
    assert result["accuracy"] == cm.accuracy(p, y)
    assert result["nll"] == pytest.approx(cm.nll(outputs.logits, y), rel=1e-12)
    assert result["brier"] == pytest.approx(cm.brier(p, y), rel=1e-6)
    assert result["ece"] == pytest.approx(cm.ece(p, y, 15), abs=1e-6)
    assert result["mean_max_prob"] == pytest.approx(cm.mean_max_prob(p), rel=1e-6)
    assert result["mean_entropy"] == pytest.approx(cm.mean_entropy(p), rel=1e-6)
    assert result["topk_acc_k5"] == cm.topk_accuracy(p, y, 5)


def test_group_normalises_sigmoid_scores():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(300, 6, generator=g) * 2
    y = torch.randint(0, 6, (300,), generator=g)
    scores = torch.sigmoid(logits)
    scores[0] = 0.0  # a row that underflowed everywhere becomes uniform
    with pytest.raises(ValueError, match="rows must sum to 1"):
        cm.brier(scores, y)
    result = cm.classification_metrics(EvalOutputs(logits, y, scores), Task("multiclass", 6))
    probs = scores.double() / scores.double().sum(1, keepdim=True)
    probs[0] = 1 / 6
    assert result["brier"] == pytest.approx(_ref_brier(probs, y), rel=1e-9)
    assert result["ece"] == pytest.approx(_ref_ece(probs, y, 15), abs=1e-12)
    assert result["mean_entropy"] == pytest.approx(_ref_entropy(probs), rel=1e-9)
    assert result["mean_max_prob"] == pytest.approx(sum(max(r) for r in probs.tolist()) / 300, rel=1e-12)
    assert result["accuracy"] == cm.accuracy(scores, y)
    # nll stays -log softmax(logits)_y, not -log of the normalised sigmoid scores
    expected_nll = log_loss(y.numpy(), torch.softmax(logits.double(), 1).numpy(), labels=np.arange(6))
    assert result["nll"] == pytest.approx(expected_nll, rel=1e-6)


def test_group_rejects_mismatched_task_and_outputs():
    outputs = _outputs(0, 20, 4)
    with pytest.raises(ValueError, match="scores have 4 columns but the task has 5 classes"):
        cm.classification_metrics(outputs, Task("multiclass", 5))
    bad = EvalOutputs(logits=outputs.logits[:, :3], targets=outputs.targets, scores=outputs.scores)
    with pytest.raises(ValueError, match=r"shape mismatch: logits \(20, 3\) vs scores \(20, 4\)"):
        cm.classification_metrics(bad, Task("multiclass", 4))
    neg = EvalOutputs(logits=outputs.logits, targets=outputs.targets, scores=outputs.scores - 0.5)
    with pytest.raises(ValueError, match="scores must be non-negative"):
        cm.classification_metrics(neg, Task("multiclass", 4))


# ---------------------------------------------------------------- maximum and RMS calibration error


def _ref_gaps(probs, targets, n_bins):
    conf, correct, bins = _ref_bins(probs, targets, n_bins)
    return [(len(m), sum(correct[i] for i in m) / len(m) - sum(conf[i] for i in m) / len(m)) for m in bins if m]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n,c", [(1, 2), (50, 3), (700, 10)])
@pytest.mark.parametrize("n_bins", [1, 5, 15])
def test_mce_and_rmsce_match_loops(seed, n, c, n_bins):
    _, probs, y = _random(seed, n, c)
    gaps = _ref_gaps(probs, y, n_bins)
    mce = max(abs(g) for _, g in gaps)
    rmsce = math.sqrt(sum(m / n * g * g for m, g in gaps))
    assert cm.max_calibration_error(probs, y, n_bins) == pytest.approx(mce, abs=1e-12)
    assert cm.rms_calibration_error(probs, y, n_bins) == pytest.approx(rmsce, abs=1e-12)
    ece = cm.ece(probs, y, n_bins)
    assert ece <= cm.rms_calibration_error(probs, y, n_bins) + 1e-12 <= cm.max_calibration_error(probs, y, n_bins) + 2e-12


def test_mce_and_rmsce_hand_computed():
    # two bins of 4: confidences 0.9 (3 right of 4: gap 0.15) and 0.6 (1 right of 4: gap 0.35)
    probs = torch.tensor([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 4, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 0, 1, 1, 1])
    assert cm.max_calibration_error(probs, y, 10) == pytest.approx(0.35)
    assert cm.rms_calibration_error(probs, y, 10) == pytest.approx(math.sqrt(0.5 * 0.15**2 + 0.5 * 0.35**2))
    assert cm.ece(probs, y, 10) == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"n_bins must be >= 1, got 0"):
        cm.max_calibration_error(probs, y, 0)


def test_calibration_directions():
    from softloss_cli.metrics import lower_is_better

    assert lower_is_better("test/mce") and lower_is_better("val/rmsce") and lower_is_better("test/ece")
