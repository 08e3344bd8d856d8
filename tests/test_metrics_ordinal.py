"""Ordinal metrics against scikit-learn, float64 loops and hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import cohen_kappa_score, mean_absolute_error

from softloss_cli.metrics import EvalOutputs, compute_metrics, lower_is_better
from softloss_cli.metrics import ordinal as om
from softloss_cli.tasks import Task

SEEDS = (0, 1, 2)
SIZES = ((8, 2), (37, 5), (500, 30), (1000, 7))  # (N, C)
ORDINAL_KEYS = {"mae", "mae_expected", "rps", "qwk", "off1_acc", "amae", "mmae", "ms", "group8_sum_mae",
                "group8_sum_mae_argmax"}


def _random(seed: int, n: int, c: int, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    targets = torch.randint(0, c, (n,), generator=g)
    return logits, torch.softmax(logits, dim=1), targets


def _values(seed: int, c: int) -> list[float]:
    g = torch.Generator().manual_seed(100 + seed)
    return torch.cumsum(torch.rand(c, generator=g, dtype=torch.float64) * 3 + 0.1, 0).tolist()


# ---------------------------------------------------------------- float64 loops


def _argmax(row):
    best = 0
    for c in range(1, len(row)):
        if row[c] > row[best]:
            best = c
    return best


def ref_rps(probs, targets):
    total = 0.0
    for p, y in zip(probs.tolist(), targets.tolist()):
        c, cdf, s = len(p), 0.0, 0.0
        for k in range(c - 1):
            cdf += p[k]
            s += (cdf - (1.0 if k >= y else 0.0)) ** 2
        total += s / (c - 1)
    return total / len(targets)


def ref_mae_expected(probs, targets, values):
    total = 0.0
    for p, y in zip(probs.tolist(), targets.tolist()):
        total += abs(sum(pk * vk for pk, vk in zip(p, values)) - values[y])
    return total / len(targets)


def ref_amae(scores, targets, values):
    errors: dict[int, list[float]] = {}
    for s, y in zip(scores.tolist(), targets.tolist()):
        errors.setdefault(y, []).append(abs(values[_argmax(s)] - values[y]))
    return sum(sum(e) / len(e) for e in errors.values()) / len(errors)


def ref_group_sum(pred_values, true_values, size=8):
    groups = len(pred_values) // size
    total = 0.0
    for g in range(groups):
        total += abs(sum(pred_values[g * size:(g + 1) * size]) - sum(true_values[g * size:(g + 1) * size]))
    return total / groups


# ---------------------------------------------------------------- against scikit-learn and loops


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n,c", SIZES)
def test_mae_matches_sklearn_on_values(seed, n, c):
    logits, _, targets = _random(seed, n, c)
    pred = logits.argmax(dim=1)
    assert om.mae(logits, targets) == pytest.approx(mean_absolute_error(targets.numpy(), pred.numpy()), abs=1e-12)
    values = _values(seed, c)
    v = torch.tensor(values, dtype=torch.float64)
    expected = mean_absolute_error(v[targets].numpy(), v[pred].numpy())
    assert om.mae(logits, targets, values) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n,c", SIZES)
def test_qwk_matches_sklearn(seed, n, c):
    logits, _, targets = _random(seed, n, c)
    pred = logits.argmax(dim=1)
    expected = cohen_kappa_score(targets.numpy(), pred.numpy(), weights="quadratic", labels=list(range(c)))
    assert om.qwk(logits, targets) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n,c", SIZES)
def test_rps_mae_expected_amae_match_loops(seed, n, c):
    logits, probs, targets = _random(seed, n, c)
    values = _values(seed, c)
    assert om.rps(probs, targets) == pytest.approx(ref_rps(probs, targets), abs=1e-12)
    assert om.mae_expected(probs, targets, values) == pytest.approx(ref_mae_expected(probs, targets, values), abs=1e-10)
    assert om.mae_expected(probs, targets) == pytest.approx(ref_mae_expected(probs, targets, list(range(c))), abs=1e-10)
    assert om.amae(logits, targets, values) == pytest.approx(ref_amae(logits, targets, values), abs=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
def test_off1_matches_loop(seed):
    logits, _, targets = _random(seed, 300, 12)
    expected = sum(abs(_argmax(s) - y) <= 1 for s, y in zip(logits.tolist(), targets.tolist())) / 300
    assert om.off1_accuracy(logits, targets) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [8, 15, 16, 203])
def test_group_sum_mae_matches_loop_and_drops_the_partial_group(seed, n):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(n, generator=g, dtype=torch.float64) * 29
    true = torch.randint(0, 30, (n,), generator=g).double()
    expected = ref_group_sum(pred.tolist(), true.tolist())
    assert om.group_sum_mae(pred, true) == pytest.approx(expected, abs=1e-10)
    assert om.group_sum_mae(pred, true, group_size=3) == pytest.approx(
        ref_group_sum(pred.tolist(), true.tolist(), 3), abs=1e-10)


# ---------------------------------------------------------------- hand-computed values


def test_hand_computed_example_with_an_absent_class():
    # 4 classes, class 2 never appears in the targets (it is predicted once).
    scores = torch.tensor([
        [0.7, 0.2, 0.1, 0.0],  # y=0, pred 0
        [0.1, 0.6, 0.3, 0.0],  # y=1, pred 1
        [0.0, 0.1, 0.6, 0.3],  # y=3, pred 2
        [0.5, 0.5, 0.0, 0.0],  # y=1, pred 0 (tie -> first index)
    ], dtype=torch.float64)
    targets = torch.tensor([0, 1, 3, 1])
    assert om.mae(scores, targets) == pytest.approx((0 + 0 + 1 + 1) / 4)
    assert om.off1_accuracy(scores, targets) == 1.0
    # per-class argmax MAE: class 0 -> 0, class 1 -> (0 + 1) / 2, class 3 -> 1; class 2 absent
    per_class, count = om.mae_per_class(scores.argmax(dim=1).double(), targets, 4)
    assert count.tolist() == [1, 2, 0, 1]
    assert per_class[[0, 1, 3]].tolist() == [0.0, 0.5, 1.0] and math.isnan(per_class[2].item())
    assert om.amae(scores, targets) == pytest.approx((0 + 0.5 + 1) / 3)
    # expected values: 0.4, 1.2, 2.2, 0.5 -> errors 0.4, 0.2, 0.8, 0.5
    assert om.mae_expected(scores, targets) == pytest.approx((0.4 + 0.2 + 0.8 + 0.5) / 4)
    # RPS rows: y=0: (0.7-1)^2+(0.9-1)^2+(1-1)^2 = 0.1 ; y=1: 0.01+(0.7-1)^2+0 = 0.1 ;
    # y=3: 0+0.01+0.49 = 0.5 ; y=1: 0.25+0+0 = 0.25 ; each / (C-1) = 3
    assert om.rps(scores, targets) == pytest.approx((0.1 + 0.1 + 0.5 + 0.25) / 3 / 4)
    expected_qwk = cohen_kappa_score([0, 1, 3, 1], [0, 1, 2, 0], weights="quadratic", labels=[0, 1, 2, 3])
    assert om.qwk(scores, targets) == pytest.approx(expected_qwk)


def test_hand_computed_group_sums_cancel_opposite_errors():
    true = torch.tensor([float(k) for k in range(8)] + [5.0] * 8 + [1.0, 2.0])  # last 2 dropped
    pred = true.clone()
    pred[0] += 1.0
    pred[1] -= 1.0  # group 0: errors cancel -> 0
    pred[8:16] += 0.5  # group 1: 8 * 0.5 = 4
    pred[16:] += 100.0  # the partial group is dropped
    assert om.group_sum_mae(pred, true) == pytest.approx((0.0 + 4.0) / 2)


def test_perfect_predictions():
    targets = torch.tensor([0, 1, 2, 3, 4, 4, 3, 2, 1, 0])
    probs = torch.nn.functional.one_hot(targets, 5).double()
    assert om.mae(probs, targets) == 0.0
    assert om.mae_expected(probs, targets) == 0.0
    assert om.rps(probs, targets) == 0.0
    assert om.qwk(probs, targets) == 1.0
    assert om.off1_accuracy(probs, targets) == 1.0
    assert om.amae(probs, targets) == 0.0


def test_worst_rps_is_one_and_qwk_of_reversed_predictions_is_minus_one():
    targets = torch.tensor([0, 4])
    probs = torch.tensor([[0, 0, 0, 0, 1.0], [1.0, 0, 0, 0, 0]])
    assert om.rps(probs, targets) == 1.0
    assert om.qwk(probs, targets) == pytest.approx(-1.0)
    assert om.qwk(probs, targets) == pytest.approx(
        cohen_kappa_score([0, 4], [4, 0], weights="quadratic", labels=list(range(5))))


def test_qwk_degenerate_single_class_is_one_and_constant_wrong_is_zero():
    targets = torch.tensor([2, 2, 2])
    right = torch.nn.functional.one_hot(targets, 4).double()
    assert om.qwk(right, targets) == 1.0  # scikit-learn gives NaN (0/0) here; we document 1.0
    wrong = torch.nn.functional.one_hot(torch.tensor([1, 1, 1]), 4).double()
    assert om.qwk(wrong, targets) == pytest.approx(
        cohen_kappa_score([2, 2, 2], [1, 1, 1], weights="quadratic", labels=list(range(4))))


# ---------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_value_errors():
    logits, probs, targets = _random(0, 10, 4)
    with pytest.raises(ValueError, match="targets must be class indices in \\[0, 3\\] for C=4"):
        om.mae(logits, targets + 4)
    with pytest.raises(ValueError, match="shape mismatch: 10 rows of scores but 9 targets"):
        om.qwk(logits, targets[:9])
    with pytest.raises(ValueError, match="probs rows must sum to 1"):
        om.rps(probs * 0.5, targets)
    with pytest.raises(ValueError, match="values must be strictly increasing"):
        om.mae(logits, targets, [0, 2, 1, 3])
    with pytest.raises(ValueError, match=r"values must be 1-D with one value per class \(4\), got shape \(3,\)"):
        om.mae_expected(probs, targets, [0, 1, 2])
    with pytest.raises(ValueError, match="rps needs at least 2 classes"):
        om.rps(torch.ones(3, 1), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="need at least 8 samples for one group, got 5"):
        om.group_sum_mae(torch.zeros(5), torch.zeros(5))
    with pytest.raises(ValueError, match="group_size must be an int >= 1, got 0"):
        om.group_sum_mae(torch.zeros(9), torch.zeros(9), group_size=0)
    with pytest.raises(ValueError, match="targets must be an integer tensor"):
        om.off1_accuracy(logits, targets.float())


# ---------------------------------------------------------------- the metric group


def _outputs(logits, targets):
    return EvalOutputs(logits=logits.float(), targets=targets, scores=torch.softmax(logits.float(), dim=1))


def test_metric_group_reports_every_key_with_task_values():
    logits, _, targets = _random(1, 203, 6)
    values = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0)
    metrics = compute_metrics(_outputs(logits, targets), Task("ordinal", 6, label_values=values))
    assert ORDINAL_KEYS <= set(metrics)
    assert "accuracy" in metrics  # the general group runs too
    probs = torch.softmax(logits.float(), dim=1).double()
    probs = probs / probs.sum(dim=1, keepdim=True)
    assert metrics["mae"] == pytest.approx(om.mae(logits, targets, values), abs=1e-9)
    assert metrics["mae_expected"] == pytest.approx(ref_mae_expected(probs, targets, values), abs=1e-6)
    assert metrics["rps"] == pytest.approx(ref_rps(probs, targets), abs=1e-6)
    v = list(values)
    pred_ev = [sum(p * x for p, x in zip(row, v)) for row in probs.tolist()]
    true_v = [v[y] for y in targets.tolist()]
    assert metrics["group8_sum_mae"] == pytest.approx(ref_group_sum(pred_ev, true_v), abs=1e-5)
    pred_arg = [v[_argmax(row)] for row in logits.tolist()]
    assert metrics["group8_sum_mae_argmax"] == pytest.approx(ref_group_sum(pred_arg, true_v), abs=1e-9)
    # with the default values (0..C-1) the value-based numbers change
    plain = compute_metrics(_outputs(logits, targets), Task("ordinal", 6))
    assert plain["mae"] != metrics["mae"] and plain["qwk"] == metrics["qwk"]


def test_metric_group_runs_only_for_ordinal_kinds():
    logits, _, targets = _random(2, 40, 5)
    multiclass = compute_metrics(_outputs(logits, targets), Task("multiclass", 5))
    assert not ORDINAL_KEYS & set(multiclass)
    partial = compute_metrics(_outputs(logits, targets), Task("partial", 5, base_kind="ordinal"))
    assert ORDINAL_KEYS <= set(partial)


def test_metric_group_skips_group_sums_below_eight_samples():
    logits, _, targets = _random(3, 7, 5)
    metrics = compute_metrics(_outputs(logits, targets), Task("ordinal", 5))
    assert "group8_sum_mae" not in metrics and "mae" in metrics


def test_metric_group_refuses_a_class_count_mismatch():
    logits, _, targets = _random(3, 20, 5)
    with pytest.raises(ValueError, match="scores have 5 columns but the task has 6 classes"):
        compute_metrics(_outputs(logits, targets), Task("ordinal", 6))


def test_directions():
    for name in ("mae", "mae_expected", "rps", "amae", "mmae", "group8_sum_mae", "group8_sum_mae_argmax"):
        assert lower_is_better(f"test/{name}"), name
    for name in ("qwk", "off1_acc", "ms"):
        assert not lower_is_better(f"val/{name}"), name


# ---------------------------------------------------------------- MMAE and minimum sensitivity


def ref_per_class(scores, targets, values):
    errors: dict[int, list[float]] = {}
    hits: dict[int, list[float]] = {}
    for s, y in zip(scores.tolist(), targets.tolist()):
        pred = _argmax(s)
        errors.setdefault(y, []).append(abs(values[pred] - values[y]))
        hits.setdefault(y, []).append(1.0 if pred == y else 0.0)
    return ({k: sum(e) / len(e) for k, e in errors.items()}, {k: sum(h) / len(h) for k, h in hits.items()})


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n,c", SIZES)
def test_mmae_and_ms_match_loops(seed, n, c):
    logits, _, targets = _random(seed, n, c, scale=1.0)
    values = _values(seed, c)
    mae_k, recall_k = ref_per_class(logits, targets, values)
    assert om.mmae(logits, targets, values) == pytest.approx(max(mae_k.values()), abs=1e-12)
    assert om.minimum_sensitivity(logits, targets) == pytest.approx(min(recall_k.values()), abs=1e-12)
    assert om.mmae(logits, targets, values) >= om.amae(logits, targets, values)


def test_mmae_and_ms_hand_computed_with_an_absent_class():
    # classes 0..3, class 2 never a target: it is skipped by both
    targets = torch.tensor([0, 0, 1, 3, 3, 3])
    pred = torch.tensor([0, 1, 1, 0, 3, 2])
    scores = torch.nn.functional.one_hot(pred, 4).double()
    # per class MAE: 0 -> (0 + 1) / 2, 1 -> 0, 3 -> (3 + 0 + 1) / 3; recall: 1/2, 1, 1/3
    assert om.mmae(scores, targets) == pytest.approx(4 / 3)
    assert om.minimum_sensitivity(scores, targets) == pytest.approx(1 / 3)
    assert om.mmae(scores, targets, values=[0, 10, 20, 30]) == pytest.approx(40 / 3)
