"""Average-K losses (two_head, bce_an, bce_wan, epr) against float64 loops written here."""

from __future__ import annotations

import math

import pytest
import torch

from softloss_cli.config.compat import check_loss_task
from softloss_cli.errors import SoftlossError
from softloss_cli.losses import LOSSES
from softloss_cli.losses.average_k import (
    AssumeNegativeLoss,
    ExpectedPositiveLoss,
    TwoHeadLoss,
    WeakAssumeNegativeLoss,
)
from softloss_cli.tasks import Task

SINGLE_HEAD = ("bce_an", "bce_wan", "epr")
ALL = (*SINGLE_HEAD, "two_head")


def _batch(seed: int, b: int = 12, c: int = 7, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g, dtype=torch.float64) * scale
    aux = torch.randn(b, c, generator=g, dtype=torch.float64) * scale
    target = torch.randint(0, c, (b,), generator=g)
    return logits.float(), aux.float(), target


def _call(name, loss, logits, target, aux=None):
    if name == "two_head":
        return loss(logits, target, aux_logits=logits.detach().clone() if aux is None else aux)
    return loss(logits, target)


# ---------------------------------------------------------------- float64 references (loops)


def _nls(x: float) -> float:
    """-log sigmoid(x) = softplus(-x), stable."""
    return max(-x, 0.0) + math.log1p(math.exp(-abs(x)))


def _ref_an(logits, target, weak=False) -> float:
    total = 0.0
    for zi, y in zip(logits.double().tolist(), target.tolist()):
        c = len(zi)
        gamma = 1.0 / (c - 1) if weak else 1.0
        s = sum(_nls(zc) if j == y else gamma * _nls(-zc) for j, zc in enumerate(zi))
        total += s / c
    return total / len(target)


def _ref_epr(logits, target, k, reg_weight) -> float:
    z = logits.double().tolist()
    b, c = len(z), len(z[0])
    pos = sum(_nls(zi[y]) / c for zi, y in zip(z, target.tolist())) / b
    expected = sum(sum(1.0 / (1.0 + math.exp(-v)) for v in zi) for zi in z) / b
    return pos + reg_weight * (expected - k) ** 2 / c**2


def _ref_pseudo(logits, target, k) -> list[list[float]]:
    """The batch's (K-1)*B largest softmax probabilities outside the true labels, plus the labels."""
    z = logits.double().tolist()
    b, c = len(z), len(z[0])
    probs = []
    for zi in z:
        m = max(zi)
        e = [math.exp(v - m) for v in zi]
        probs.append([v / sum(e) for v in e])
    pseudo = [[1.0 if j == y else 0.0 for j in range(c)] for y in target.tolist()]
    others = sorted(((probs[i][j], i, j) for i in range(b) for j in range(c) if j != target[i]), reverse=True)
    for _, i, j in others[: int(round((k - 1) * b))]:
        pseudo[i][j] = 1.0
    return pseudo


def _ref_two_head(logits, aux, target, k, aux_weight) -> float:
    z, a = logits.double().tolist(), aux.double().tolist()
    pseudo = _ref_pseudo(logits, target, k)
    total = 0.0
    for zi, ai, ti, y in zip(z, a, pseudo, target.tolist()):
        m = max(zi)
        ce = m + math.log(sum(math.exp(v - m) for v in zi)) - zi[y]
        bce = sum(_nls(av) if tv else _nls(-av) for av, tv in zip(ai, ti)) / len(ai)
        total += ce + aux_weight * bce
    return total / len(z)


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bce_an_and_wan_match_reference(seed):
    logits, _, target = _batch(seed)
    assert AssumeNegativeLoss()(logits, target).item() == pytest.approx(_ref_an(logits, target), rel=1e-5)
    assert WeakAssumeNegativeLoss()(logits, target).item() == pytest.approx(_ref_an(logits, target, weak=True), rel=1e-5)


def test_bce_an_is_torch_bce_on_one_hot():
    logits, _, target = _batch(3)
    onehot = torch.nn.functional.one_hot(target, logits.shape[1]).float()
    torch_value = torch.nn.BCEWithLogitsLoss()(logits, onehot)
    assert AssumeNegativeLoss()(logits, target).item() == pytest.approx(torch_value.item(), rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("k", "reg_weight"), [(2.0, 1.0), (1.0, 5.0), (3.5, 0.0)])
def test_epr_matches_reference(seed, k, reg_weight):
    logits, _, target = _batch(seed)
    loss = ExpectedPositiveLoss(k=k, reg_weight=reg_weight)
    assert loss(logits, target).item() == pytest.approx(_ref_epr(logits, target, k, reg_weight), rel=1e-5)
    assert loss.last_parts["expected_positives"].item() == pytest.approx(torch.sigmoid(logits).sum(1).mean().item(), rel=1e-6)


def test_epr_reductions_carry_the_batch_regulariser():
    logits, _, target = _batch(4)
    mean = ExpectedPositiveLoss()(logits, target)
    total = ExpectedPositiveLoss(reduction="sum")(logits, target)
    per = ExpectedPositiveLoss(reduction="none")(logits, target)
    assert total.item() == pytest.approx(len(target) * mean.item(), rel=1e-6)
    assert per.shape == target.shape and per.mean().item() == pytest.approx(mean.item(), rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("k", "aux_weight"), [(2.0, 1.0), (3.0, 0.5), (1.0, 2.0), (1.5, 1.0)])
def test_two_head_matches_reference(seed, k, aux_weight):
    logits, aux, target = _batch(seed)
    loss = TwoHeadLoss(k=k, aux_weight=aux_weight)
    got = loss(logits, target, aux_logits=aux)
    assert got.item() == pytest.approx(_ref_two_head(logits, aux, target, k, aux_weight), rel=1e-5)
    expected_positives = 1 + int(round((k - 1) * len(target))) / len(target)
    assert loss.last_parts["pseudo_positives"].item() == pytest.approx(expected_positives)
    assert set(loss.last_parts) >= {"main", "ce", "aux_bce", "pseudo_threshold", "pseudo_positives"}


def test_two_head_pseudo_labels_follow_ambiguity():
    # Sample 0 is spread over classes 0-2, sample 1 is sure of class 3: the extra positives go to sample 0.
    logits = torch.tensor([[2.0, 2.0, 2.0, -5.0, -5.0], [-5.0, -5.0, -5.0, 9.0, -5.0]])
    target = torch.tensor([0, 3])
    pseudo, boundary = TwoHeadLoss(k=2.0).pseudo_labels(torch.softmax(logits, 1), target)
    assert pseudo.tolist() == [[1, 1, 1, 0, 0], [0, 0, 0, 1, 0]]
    assert boundary.item() == pytest.approx(1 / 3, rel=1e-2)  # minus the e^-7 tails


def test_two_head_gradient_reaches_both_heads_but_pseudo_labels_are_detached():
    logits, aux, target = _batch(5)
    z, a = logits.clone().requires_grad_(), aux.clone().requires_grad_()
    TwoHeadLoss(aux_weight=0.0)(z, target, aux_logits=a).backward()
    assert torch.count_nonzero(a.grad) == 0  # aux term off: nothing flows to the multi-label head
    z2 = logits.clone().requires_grad_()
    TwoHeadLoss(aux_weight=1.0)(z2, target, aux_logits=aux).backward()
    ce_only = logits.clone().requires_grad_()
    torch.nn.functional.cross_entropy(ce_only, target).backward()
    assert torch.allclose(z2.grad, ce_only.grad, atol=1e-7)  # the BCE does not push the softmax head


def test_two_head_running_threshold():
    logits, aux, target = _batch(6)
    loss = TwoHeadLoss(k=2.0, threshold="running", momentum=0.5)
    assert math.isnan(loss.running_threshold.item())
    loss(logits, target, aux_logits=aux)
    first = loss.last_parts["pseudo_threshold"].item()
    assert loss.running_threshold.item() == pytest.approx(first)
    probs = torch.softmax(logits, 1)
    expected = torch.nn.functional.one_hot(target, 7).bool() | (probs >= first)
    assert loss.last_parts["pseudo_positives"].item() == pytest.approx(expected.sum(1).float().mean().item())
    logits2, _, target2 = _batch(7)
    _, batch_boundary = TwoHeadLoss(k=2.0).pseudo_labels(torch.softmax(logits2, 1), target2)
    loss(logits2, target2, aux_logits=aux)
    assert loss.running_threshold.item() == pytest.approx(0.5 * first + 0.5 * batch_boundary.item(), rel=1e-6)
    loss.eval()  # evaluation mode: the estimate is used, not updated
    before = loss.running_threshold.item()
    loss(logits, target, aux_logits=aux)
    assert loss.running_threshold.item() == before
    assert "running_threshold" in loss.state_dict()


# ---------------------------------------------------------------- edge cases


@pytest.mark.parametrize("name", ALL)
def test_extreme_logits_finite_values_and_gradients(name):
    logits = torch.tensor([[1e4, -1e4, 0.0, 5.0], [-1e4, -1e4, -1e4, -1e4], [1e4, 1e4, 1e4, 1e4]], requires_grad=True)
    target = torch.tensor([1, 0, 3])
    aux = torch.tensor([[1e4, -1e4, 1e4, -1e4]] * 3, requires_grad=True)
    loss = LOSSES.get(name)()
    value = loss(logits, target, aux_logits=aux) if name == "two_head" else loss(logits, target)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    if name == "two_head":
        assert torch.isfinite(aux.grad).all()


@pytest.mark.parametrize("name", ALL)
def test_perfect_predictions(name):
    target = torch.tensor([0, 2, 1])
    logits = (torch.nn.functional.one_hot(target, 4).float() * 2 - 1).mul(40.0).requires_grad_()
    loss = LOSSES.get(name)(k=1.0) if name in ("two_head", "epr") else LOSSES.get(name)()
    value = _call(name, loss, logits, target)
    value.backward()
    assert torch.isfinite(logits.grad).all()
    assert value.item() < 1e-9


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_computed_in_float32(name, dtype):
    logits, aux, target = _batch(8)
    low = logits.to(dtype).requires_grad_()
    loss = LOSSES.get(name)()
    value = loss(low, target, aux_logits=aux.to(dtype)) if name == "two_head" else loss(low, target)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value) and torch.isfinite(low.grad).all()
    ref_loss = LOSSES.get(name)()
    ref = (ref_loss(low.detach().float(), target, aux_logits=aux.to(dtype).float()) if name == "two_head"
           else ref_loss(low.detach().float(), target))
    assert value.item() == pytest.approx(ref.item(), rel=1e-6)


def test_k_one_pseudo_labels_are_the_labels():
    logits, aux, target = _batch(9)
    loss = TwoHeadLoss(k=1.0, aux_weight=1.0)
    value = loss(logits, target, aux_logits=aux)
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert value.item() == pytest.approx(ce.item() + AssumeNegativeLoss()(aux, target).item(), rel=1e-6)
    assert math.isnan(loss.last_parts["pseudo_threshold"].item())


def test_budget_capped_by_available_entries():
    logits, aux, target = _batch(10, b=4, c=3)
    loss = TwoHeadLoss(k=10.0)
    loss(logits, target, aux_logits=aux)
    assert loss.last_parts["pseudo_positives"].item() == 3.0  # every entry positive, no more


# ---------------------------------------------------------------- contracts and bad input


def test_two_head_needs_aux_logits():
    logits, _, target = _batch(0)
    with pytest.raises(ValueError, match="loss=two_head needs the second head's aux_logits: add model.heads=two"):
        TwoHeadLoss()(logits, target)
    with pytest.raises(ValueError, match=r"aux_logits \(12, 3\) must be shaped like logits \(12, 7\)"):
        TwoHeadLoss()(logits, target, aux_logits=torch.zeros(12, 3))


@pytest.mark.parametrize("name", ALL)
def test_refuses_multi_hot_targets(name):
    logits = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=rf"loss={name} expects int64 class indices \[B=4\]"):
        _call(name, LOSSES.get(name)(), logits, torch.zeros(4, 3))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TwoHeadLoss(k=0.5), r"k must be >= 1"),
        (lambda: TwoHeadLoss(aux_weight=-1), "aux_weight must be >= 0"),
        (lambda: TwoHeadLoss(threshold="global"), "threshold must be one of batch, running"),
        (lambda: TwoHeadLoss(momentum=1.0), r"momentum must be in \[0, 1\)"),
        (lambda: ExpectedPositiveLoss(k=0), "k must be > 0"),
        (lambda: ExpectedPositiveLoss(reg_weight=-1), "reg_weight must be >= 0"),
        (lambda: AssumeNegativeLoss(reduction="avg"), "reduction must be one of mean, sum, none"),
    ],
)
def test_bad_hyper_parameters(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_attributes():
    assert TwoHeadLoss.needs_aux and TwoHeadLoss.set_source == "aux_logits" and TwoHeadLoss.activation == "softmax"
    for name in SINGLE_HEAD:
        cls = LOSSES.get(name)
        assert cls.activation == "sigmoid" and cls.set_source == "logits" and not cls.needs_aux
    for name in ALL:
        assert LOSSES.get(name).task_kinds == ("multiclass",)


def test_two_head_without_second_head_is_refused():
    with pytest.raises(SoftlossError, match=r"^loss=two_head needs a second head: add model.heads=two$"):
        check_loss_task(TwoHeadLoss(), Task("multiclass", 5), "ambiguous_images", "one")
    check_loss_task(TwoHeadLoss(), Task("multiclass", 5), "ambiguous_images", "two")


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("kind", ["multilabel", "ordinal", "partial"])
def test_refused_on_other_task_kinds(name, kind):
    task = Task(kind, 5, base_kind="multiclass" if kind == "partial" else None)
    with pytest.raises(SoftlossError, match=rf"loss={name} does not fit data=x \(task kind '{kind}'\)"):
        check_loss_task(LOSSES.get(name)(), task, "x", "two")


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("name", ALL)
def test_loss_config_composes_and_instantiates(compose_cfg, name):
    from hydra.utils import instantiate

    overrides = [f"loss={name}", "data=ambiguous_images", "model.heads=two"]
    cfg = compose_cfg(overrides)
    loss = instantiate(cfg.loss)
    assert type(loss) is LOSSES.get(name)
    model = instantiate(cfg.model, input_shape=[3, 32, 32], num_classes=30)
    out = model(torch.randn(4, 3, 32, 32))
    value = loss(out["logits"], torch.tensor([0, 1, 2, 29]), aux_logits=out["aux_logits"])
    assert torch.isfinite(value)


# ---------------------------------------------------------------- hand-derived gradients and fast paths


@pytest.mark.parametrize("neg_weight", [1.0, 0.2])
def test_bce_one_hot_rows_gradcheck(neg_weight):
    from softloss_cli.losses.average_k import bce_one_hot_rows
    from softloss_cli.losses.base import row_loss

    g = torch.Generator().manual_seed(0)
    z = (torch.randn(5, 6, generator=g, dtype=torch.float64) * 3).requires_grad_()
    target = torch.tensor([0, 5, 2, 2, 3])
    assert torch.autograd.gradcheck(lambda x: row_loss(bce_one_hot_rows, x, target, neg_weight, 1 / 6)[0], (z,))


def test_top_entries_matches_topk_on_large_inputs():
    from softloss_cli.losses.average_k import _top_entries

    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(512, 300, generator=g) * 3, 1).reshape(-1)
    for count in (1, 512, 4000):
        boundary, index = _top_entries(probs, count)
        ref_values, ref_index = probs.topk(count)
        assert boundary.item() == ref_values[-1].item()
        assert len(index) == count and set(index.tolist()) == set(ref_index.tolist())


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_epr_kernel_path_equals_the_autograd_path(reduction):
    """The CPU kernel (closed-form gradient) and the autograd path give the same value, parts
    and gradient; reduction 'none' always takes the autograd path."""
    from softloss_cli.losses import fused, kernels
    from softloss_cli.losses.average_k import epr_batch

    if not kernels.available():
        pytest.skip("the CPU kernels do not build here")
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(300, 17, generator=g) * 4, torch.randint(0, 17, (300,), generator=g)
    out = {}
    for mode in ("kernel", "off"):
        z = logits.clone().requires_grad_()
        loss = ExpectedPositiveLoss(k=3.0, reg_weight=2.0, reduction=reduction)
        with fused.mode_as(mode):
            value = loss(z, target)
            value.backward()
        out[mode] = (value.detach(), z.grad, {k: v.detach() for k, v in loss.last_parts.items()})
    with fused.mode_as("kernel"):
        assert fused.path_for(logits, epr_batch) == "kernel"
    torch.testing.assert_close(out["kernel"][0], out["off"][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["kernel"][1], out["off"][1], rtol=1e-4, atol=1e-8)
    assert out["kernel"][2].keys() == out["off"][2].keys()
    for key in out["off"][2]:
        torch.testing.assert_close(out["kernel"][2][key], out["off"][2][key], rtol=1e-5, atol=1e-6)
