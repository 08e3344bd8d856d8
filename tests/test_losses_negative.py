"""Negative-label losses (nl, negated_ce, positives_only) against float64 loop references.

Targets are partial: int64 [B, 2] rows (label, is_positive).
"""

from __future__ import annotations

import math

import pytest
import torch

from softloss_cli.config.compat import check_loss_task
from softloss_cli.errors import SoftlossError
from softloss_cli.losses import LOSSES
from softloss_cli.losses.negative import (
    NegatedCrossEntropyLoss,
    NegativeLearningLoss,
    PositivesOnlyLoss,
    negative_log_complement,
    split_partial_targets,
)
from softloss_cli.tasks import Task

# --------------------------------------------------------------------------- references


def ref_log_probs(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def ref_nl_row(row, label) -> float:
    """-log(1 - p_l) = -log(sum_{k != l} p_k), float64, by summing the other probabilities."""
    lp = ref_log_probs(row)
    others = [v for k, v in enumerate(lp) if k != label]
    m = max(others)
    return -(m + math.log(sum(math.exp(v - m) for v in others)))


def ref_loss(name: str, logits: torch.Tensor, target: torch.Tensor, neg_weight: float = 1.0,
             normalize: str = "positives") -> float:
    terms, n_pos = [], 0
    for row, (label, positive) in zip(logits.double().tolist(), target.tolist()):
        lp = ref_log_probs(row)
        if positive:
            terms.append(-lp[label])
            n_pos += 1
        elif name == "nl":
            terms.append(neg_weight * ref_nl_row(row, label))
        elif name == "negated_ce":
            terms.append(neg_weight * lp[label])
        else:
            terms.append(0.0)
    if name == "positives_only" or normalize == "positives":
        return sum(terms) / max(n_pos, 1)
    return sum(terms) / len(terms)


def random_batch(b=32, c=6, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g) * scale
    target = torch.stack([torch.randint(0, c, (b,), generator=g), torch.randint(0, 2, (b,), generator=g)], dim=1)
    return logits, target


NAMES = ("nl", "negated_ce", "positives_only")

# --------------------------------------------------------------------------- registry and task kinds


def test_registered_for_partial_tasks_only():
    for name in NAMES:
        cls = LOSSES.get(name)
        assert cls.task_kinds == ("partial",)
    partial = Task("partial", 10, base_kind="multiclass")
    check_loss_task(NegativeLearningLoss(), partial, "digits", "one")
    with pytest.raises(SoftlossError, match=r"loss=nl does not fit data=digits \(task kind 'multiclass'\)"):
        check_loss_task(NegativeLearningLoss(), Task("multiclass", 10), "digits", "one")
    with pytest.raises(SoftlossError, match=r"losses for partial data: .*negated_ce, nl, positives_only"):
        check_loss_task(LOSSES.get("ce")(), partial, "digits", "one")


# --------------------------------------------------------------------------- values against the references


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_float64_reference(name, seed):
    logits, target = random_batch(seed=seed)
    got = LOSSES.get(name)()(logits, target)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref_loss(name, logits, target), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", ["nl", "negated_ce"])
@pytest.mark.parametrize("seed", [0, 1])
def test_batch_normalisation_matches_float64_reference(name, seed):
    logits, target = random_batch(seed=seed)
    got = LOSSES.get(name)(normalize="batch")(logits, target)
    assert got.item() == pytest.approx(ref_loss(name, logits, target, normalize="batch"), rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="normalize must be one of positives, batch"):
        LOSSES.get(name)(normalize="samples")


@pytest.mark.parametrize("normalize", ["positives", "batch"])
def test_nl_gradient_matches_autograd_of_the_reference_formula(normalize):
    logits, target = random_batch(b=16, seed=7)
    z = logits.double().requires_grad_(True)
    label, positive = target[:, 0], target[:, 1] == 1
    lse = torch.logsumexp(z, 1)
    ce = lse - z.gather(1, label[:, None]).squeeze(1)
    others = torch.logsumexp(z.masked_fill(torch.nn.functional.one_hot(label, 6).bool(), float("-inf")), 1)
    rows = torch.where(positive, ce, 0.7 * (lse - others))
    denominator = positive.sum().clamp_min(1) if normalize == "positives" else len(rows)
    (rows.sum() / denominator).backward()
    x = logits.clone().requires_grad_(True)
    NegativeLearningLoss(neg_weight=0.7, normalize=normalize)(x, target).backward()
    torch.testing.assert_close(x.grad.double(), z.grad, rtol=1e-5, atol=1e-7)


def test_nl_without_negative_weight_is_positives_only():
    logits, target = random_batch(seed=8)
    x1, x2 = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    nl = NegativeLearningLoss(neg_weight=0.0)(x1, target)
    base = PositivesOnlyLoss()(x2, target)
    nl.backward()
    base.backward()
    assert nl.item() == pytest.approx(base.item(), rel=1e-6)
    torch.testing.assert_close(x1.grad, x2.grad)


@pytest.mark.parametrize("name", ["nl", "negated_ce"])
def test_neg_weight_scales_the_negative_term_only(name):
    logits, target = random_batch(seed=3)
    got = LOSSES.get(name)(neg_weight=0.3)(logits, target)
    assert got.item() == pytest.approx(ref_loss(name, logits, target, 0.3), rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="neg_weight must be >= 0"):
        LOSSES.get(name)(neg_weight=-1.0)


def test_all_positive_batch_is_plain_cross_entropy():
    logits, target = random_batch(seed=4)
    target[:, 1] = 1
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0])
    for name in NAMES:
        assert LOSSES.get(name)()(logits, target).item() == pytest.approx(ce.item(), rel=1e-6)


def test_positives_only_averages_over_positives_and_handles_none():
    logits, target = random_batch(b=8, seed=5)
    target[:, 1] = torch.tensor([1, 0, 0, 0, 1, 0, 0, 0])
    loss_fn = PositivesOnlyLoss()
    pos = target[:, 1] == 1
    expected = torch.nn.functional.cross_entropy(logits[pos], target[pos, 0])
    assert loss_fn(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert PositivesOnlyLoss(reduction="sum")(logits, target).item() == pytest.approx(2 * expected.item(), rel=1e-6)
    per = PositivesOnlyLoss(reduction="none")(logits, target)
    assert per.shape == (8,) and (per[~pos] == 0).all()
    # a batch of negatives only: zero loss, zero (finite) gradient
    z = logits.clone().requires_grad_(True)
    target[:, 1] = 0
    loss = loss_fn(z, target)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(z.grad, torch.zeros_like(z))


def test_reductions_sum_and_none():
    logits, target = random_batch(seed=6)
    for name in ("nl", "negated_ce"):
        mean = LOSSES.get(name)(normalize="batch")(logits, target)
        per_positive = LOSSES.get(name)()(logits, target)
        total = LOSSES.get(name)(reduction="sum")(logits, target)
        per = LOSSES.get(name)(reduction="none")(logits, target)
        assert per.shape == (32,)
        assert total.item() == pytest.approx(32 * mean.item(), rel=1e-5)
        assert total.item() == pytest.approx(int(target[:, 1].sum()) * per_positive.item(), rel=1e-5)
        assert per.sum().item() == pytest.approx(total.item(), rel=1e-5)
    with pytest.raises(ValueError, match="reduction must be one of mean, sum, none"):
        NegativeLearningLoss(reduction="max")


# --------------------------------------------------------------------------- the stable -log(1 - p_l)


def test_stable_nl_term_equals_naive_formula_where_naive_is_finite():
    logits, target = random_batch(b=200, c=5, seed=7, scale=4.0)
    label = target[:, 0]
    naive = -torch.log1p(-torch.softmax(logits.double(), 1).gather(1, label[:, None]).squeeze(1))
    stable = negative_log_complement(logits, label)
    assert torch.isfinite(naive).all()
    torch.testing.assert_close(stable.double(), naive, rtol=1e-5, atol=1e-6)


def test_stable_nl_term_finite_where_naive_is_infinite():
    # p_l rounds to 1 in float32: the naive form gives inf, the true value is 1e4 - log(2).
    logits = torch.tensor([[1e4, 0.0, 0.0], [40.0, 0.0, -3.0], [-1e4, 1e4, 1e4]], requires_grad=True)
    label = torch.tensor([0, 0, 1])
    naive = -torch.log(1 - torch.softmax(logits.detach(), 1).gather(1, label[:, None]).squeeze(1))
    assert torch.isinf(naive[:2]).all()
    stable = negative_log_complement(logits, label)
    expected = [ref_nl_row(row, lab) for row, lab in zip(logits.detach().double().tolist(), label.tolist())]
    # float32 resolves 1e4 to about 1e-3: an absolute tolerance of a few ulps at that size
    assert stable.tolist() == pytest.approx(expected, rel=1e-6, abs=2e-3)
    assert stable[2].item() == pytest.approx(math.log(2), abs=2e-3)  # p_l = 1/2
    stable.sum().backward()
    assert torch.isfinite(logits.grad).all()


EXTREME = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4], [1e4, 1e4, 1e4], [0.0, 0.0, 1e4]])
EXTREME_TARGET = torch.tensor([[0, 0], [1, 1], [2, 0], [2, 1]])


@pytest.mark.parametrize("name", NAMES)
def test_finite_values_and_gradients_at_extreme_logits(name):
    z = EXTREME.clone().requires_grad_(True)
    loss = LOSSES.get(name)()(z, EXTREME_TARGET)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(ref_loss(name, EXTREME, EXTREME_TARGET), rel=1e-5, abs=1e-4)
    loss.backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_are_computed_in_float32(name, dtype):
    logits, target = random_batch(seed=8, scale=8.0)
    low = logits.to(dtype).requires_grad_(True)
    loss = LOSSES.get(name)()(low, target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    # the same value as float32 on the rounded logits
    assert loss.item() == pytest.approx(ref_loss(name, low.detach().float(), target), rel=1e-5, abs=1e-5)
    loss.backward()
    assert torch.isfinite(low.grad.float()).all()
    big = (EXTREME * 6).to(dtype)  # +-6e4: the fp16 range
    assert torch.isfinite(LOSSES.get(name)()(big, EXTREME_TARGET))


def test_perfect_predictions_give_near_zero_nl_loss():
    # positives: all mass on the label; negatives: no mass on the forbidden label
    logits = torch.tensor([[50.0, 0.0, 0.0], [0.0, 0.0, 50.0], [0.0, -50.0, 0.0]])
    target = torch.tensor([[0, 1], [0, 0], [1, 0]])
    assert NegativeLearningLoss()(logits, target).item() < 1e-20
    assert PositivesOnlyLoss()(logits, target).item() < 1e-20
    # negated_ce keeps rewarding the negatives: its value goes down without bound as p_l -> 0
    steeper = logits.clone()
    steeper[1, 0] = -1e4
    assert NegatedCrossEntropyLoss()(steeper, target) < NegatedCrossEntropyLoss()(logits, target) - 1000


def test_nl_gradient_vanishes_when_the_forbidden_class_is_gone_but_negated_ce_does_not():
    target = torch.tensor([[0, 0]])
    for cls, vanishes in ((NegativeLearningLoss, True), (NegatedCrossEntropyLoss, False)):
        z = torch.tensor([[-30.0, 1.0, 0.0]], requires_grad=True)
        cls()(z, target).backward()
        assert (z.grad.abs().max().item() < 1e-10) is vanishes


def test_last_parts_split_positive_and_negative_terms():
    logits, target = random_batch(seed=9)
    loss_fn = NegativeLearningLoss()
    loss = loss_fn(logits, target)
    parts = loss_fn.last_parts
    assert set(parts) == {"main", "pos_ce", "neg_term"}
    pos = target[:, 1] == 1
    ce = torch.nn.functional.cross_entropy(logits[pos], target[pos, 0])
    nl = negative_log_complement(logits[~pos], target[~pos, 0]).mean()
    assert parts["pos_ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert parts["neg_term"].item() == pytest.approx(nl.item(), rel=1e-5)
    assert parts["main"].item() == pytest.approx(loss.item())
    assert not any(p.requires_grad for p in parts.values())


def test_penalty_still_works_on_partial_losses():
    logits, target = random_batch(seed=10)
    base = NegativeLearningLoss()(logits, target)
    penalised = NegativeLearningLoss(penalty="entropy", penalty_weight=0.5)(logits, target)
    p = torch.softmax(logits.double(), 1)
    entropy = -(p * p.log()).sum(1).mean()
    assert penalised.item() == pytest.approx(base.item() + 0.5 * entropy.item(), rel=1e-5)
    pos_only = PositivesOnlyLoss(penalty="entropy", penalty_weight=0.5)(logits, target)
    keep = target[:, 1] == 1
    expected = torch.nn.functional.cross_entropy(logits[keep], target[keep, 0]) + 0.5 * (
        -(p[keep] * p[keep].log()).sum(1).mean())
    assert pos_only.item() == pytest.approx(expected.item(), rel=1e-5)


# --------------------------------------------------------------------------- bad targets


def test_bad_targets_are_refused_with_a_clear_message():
    logits = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"partial targets must be \[B, 2\] rows \(label, is_positive\), got shape \(4,\)"):
        NegativeLearningLoss()(logits, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="partial targets must be an integer tensor"):
        NegativeLearningLoss()(logits, torch.zeros(4, 2))
    label, positive = split_partial_targets(torch.tensor([[2, 1], [0, 0]]))
    assert label.tolist() == [2, 0] and positive.tolist() == [True, False]


# ---------------------------------------------------------------- hand-derived gradients (gradcheck, float64)


@pytest.mark.parametrize("all_rows", [False, True])
@pytest.mark.parametrize("neg_weight", [1.0, 0.3])
def test_nl_rows_gradcheck(neg_weight, all_rows):
    """Both ways of handling the rows where 1 - p_l underflows: a subset (eager CPU) and every
    row (CUDA, compiled)."""
    from softloss_cli.losses.base import row_loss
    from softloss_cli.losses.negative import nl_rows

    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 5, generator=g, dtype=torch.float64) * 2
    label = torch.tensor([0, 1, 2, 3, 4, 1])
    positive = torch.tensor([True, False, False, True, False, False])
    z[2, 2] += 5.0  # a negative label holding p > 1/2
    z[4, 4] += 60.0  # 1 - p_l ~ e^-60: the log-domain (leave-one-out) path
    z.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: row_loss(nl_rows, x, label, positive, neg_weight, all_rows=all_rows)[0], (z,))


def test_only_nl_asks_for_gradient_clipping():
    assert "collapsed" in NegativeLearningLoss.clip_advice
    assert PositivesOnlyLoss.clip_advice is None and NegatedCrossEntropyLoss.clip_advice is None
    assert LOSSES.get("ce").clip_advice is None
