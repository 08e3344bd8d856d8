"""Multi-label losses (softmax_ml, bce, asl, focal) against float64 loops written here."""

from __future__ import annotations

import math

import pytest
import torch

from softloss_cli.config.compat import check_loss_task
from softloss_cli.errors import SoftlossError
from softloss_cli.losses import LOSSES
from softloss_cli.losses.base import row_loss
from softloss_cli.losses.multilabel import AsymmetricLoss, BCELoss, FocalLoss, SoftmaxMultiLabelLoss
from softloss_cli.tasks import Task

SIGMOID_LOSSES = ("bce", "asl", "focal")
ALL = ("softmax_ml", *SIGMOID_LOSSES)


def _batch(seed: int, b: int = 16, c: int = 10, scale: float = 3.0, empty_rows: int = 3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g, dtype=torch.float64) * scale
    target = (torch.rand(b, c, generator=g) < 0.25).to(torch.float64)
    target[:empty_rows] = 0.0
    return logits, target


# ---------------------------------------------------------------- float64 references (loops)


def _log_sigmoid(x: float) -> float:
    # log(1 / (1 + e^-x)) without overflow: -softplus(-x)
    return -(max(-x, 0.0) + math.log1p(math.exp(-abs(x))))


def _ref_softmax_ml(logits, target, empty="uniform") -> float:
    z, y = logits.tolist(), target.tolist()
    total = 0.0
    for zi, yi in zip(z, y):
        m = max(zi)
        lse = m + math.log(sum(math.exp(v - m) for v in zi))
        s = sum(yi)
        if s == 0:
            if empty == "ignore":
                continue
            q = [1.0 / len(zi)] * len(zi)
        else:
            q = [v / s for v in yi]
        total += -sum(qc * (zc - lse) for qc, zc in zip(q, zi))
    return total / len(z)


def _ref_bce(logits, target, pos_weight=None) -> float:
    total = 0.0
    for zi, yi in zip(logits.tolist(), target.tolist()):
        for c, (zc, yc) in enumerate(zip(zi, yi)):
            w = 1.0 if pos_weight is None else (pos_weight[c] if isinstance(pos_weight, list) else pos_weight)
            p = 1.0 / (1.0 + math.exp(-zc))
            total += -(w * yc * math.log(p) + (1 - yc) * math.log(1 - p))
    return total / logits.shape[0]


def _ref_asl(logits, target, gamma_neg, gamma_pos, clip) -> float:
    total = 0.0
    for zi, yi in zip(logits.tolist(), target.tolist()):
        for zc, yc in zip(zi, yi):
            p = 1.0 / (1.0 + math.exp(-zc))
            pm = max(p - clip, 0.0)
            pos = (1 - p) ** gamma_pos * math.log(p)
            neg = pm**gamma_neg * math.log(1 - pm)
            total += -(yc * pos + (1 - yc) * neg)
    return total / logits.shape[0]


def _ref_focal(logits, target, gamma, alpha) -> float:
    total = 0.0
    for zi, yi in zip(logits.tolist(), target.tolist()):
        for zc, yc in zip(zi, yi):
            p = 1.0 / (1.0 + math.exp(-zc))
            a_pos, a_neg = (1.0, 1.0) if alpha is None else (alpha, 1 - alpha)
            total += -(a_pos * yc * (1 - p) ** gamma * math.log(p) + a_neg * (1 - yc) * p**gamma * math.log(1 - p))
    return total / logits.shape[0]


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("empty", ["uniform", "ignore"])
def test_softmax_ml_matches_reference(seed, empty):
    logits, target = _batch(seed)
    got = SoftmaxMultiLabelLoss(empty=empty)(logits.float(), target.float())
    assert got.item() == pytest.approx(_ref_softmax_ml(logits.float().double(), target, empty), rel=1e-5, abs=1e-6)


def test_softmax_ml_soft_targets_are_normalised_and_logit_scale_applies():
    logits, _ = _batch(3, empty_rows=0)
    target = torch.rand(logits.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    got = SoftmaxMultiLabelLoss(logit_scale=2.0)(logits.float(), target.float())
    assert got.item() == pytest.approx(_ref_softmax_ml(2.0 * logits.float().double(), target), rel=1e-5)


def test_softmax_ml_empty_row_uniform_is_minimised_by_equal_logits():
    loss = SoftmaxMultiLabelLoss()
    empty = torch.zeros(1, 5)
    assert loss(torch.zeros(1, 5), empty).item() == pytest.approx(math.log(5), rel=1e-6)
    assert loss(torch.tensor([[3.0, 0, 0, 0, 0]]), empty).item() > math.log(5)
    assert SoftmaxMultiLabelLoss(empty="ignore")(torch.tensor([[3.0, 0, 0, 0, 0]]), empty).item() == 0.0


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("pos_weight", [None, 2.5, [0.5 + 0.2 * c for c in range(10)]])
def test_bce_matches_reference_and_is_C_times_torch_default(seed, pos_weight):
    logits, target = _batch(seed)
    got = BCELoss(pos_weight=pos_weight)(logits.float(), target.float())
    assert got.item() == pytest.approx(_ref_bce(logits.float().double(), target, pos_weight), rel=1e-5)
    if pos_weight is None:
        torch_default = torch.nn.BCEWithLogitsLoss()(logits.float(), target.float())
        assert got.item() == pytest.approx(10 * torch_default.item(), rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("gamma_neg", "gamma_pos", "clip"), [(4.0, 0.0, 0.05), (2.0, 1.0, 0.0), (0.5, 0.5, 0.2), (0.0, 0.0, 0.0)])
def test_asl_matches_reference(seed, gamma_neg, gamma_pos, clip):
    logits, target = _batch(seed)
    got = AsymmetricLoss(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip)(logits.float(), target.float())
    ref = _ref_asl(logits.float().double(), target, gamma_neg, gamma_pos, clip)
    assert got.item() == pytest.approx(ref, rel=1e-5, abs=1e-6)


def test_asl_without_focusing_or_clip_is_bce():
    logits, target = _batch(5)
    asl = AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0)(logits.float(), target.float())
    assert asl.item() == pytest.approx(BCELoss()(logits.float(), target.float()).item(), rel=1e-6)


def test_asl_detach_weights_same_value_other_gradient():
    logits, target = _batch(6)
    z1 = logits.float().requires_grad_()
    z2 = logits.float().requires_grad_()
    a = AsymmetricLoss()(z1, target.float())
    b = AsymmetricLoss(detach_weights=True)(z2, target.float())
    assert a.item() == pytest.approx(b.item(), rel=1e-7)
    a.backward()
    b.backward()
    assert not torch.allclose(z1.grad, z2.grad)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, None), (2.0, 0.25), (0.0, None), (1.5, 0.75)])
def test_focal_matches_reference(seed, gamma, alpha):
    logits, target = _batch(seed)
    got = FocalLoss(gamma=gamma, alpha=alpha)(logits.float(), target.float())
    assert got.item() == pytest.approx(_ref_focal(logits.float().double(), target, gamma, alpha), rel=1e-5, abs=1e-6)


def test_focal_matches_torchvision_sigmoid_focal_loss():
    from torchvision.ops import sigmoid_focal_loss

    logits, target = _batch(7)
    ours = FocalLoss(gamma=2.0, alpha=0.25)(logits.float(), target.float())
    theirs = sigmoid_focal_loss(logits.float(), target.float(), alpha=0.25, gamma=2.0, reduction="none").sum(1).mean()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_reductions(name):
    logits, target = _batch(8)
    cls = LOSSES.get(name)
    per = cls(reduction="none")(logits.float(), target.float())
    assert per.shape == (logits.shape[0],)
    assert cls(reduction="sum")(logits.float(), target.float()).item() == pytest.approx(per.sum().item(), rel=1e-6)
    assert cls()(logits.float(), target.float()).item() == pytest.approx(per.mean().item(), rel=1e-6)


# ---------------------------------------------------------------- edge cases


@pytest.mark.parametrize("name", ALL)
def test_extreme_logits_finite_values_and_gradients(name):
    c = 6
    logits = torch.tensor([[1e4, -1e4, 1e4, -1e4, 0.0, 5.0], [-1e4] * c, [1e4] * c], requires_grad=True)
    target = torch.tensor([[1.0, 0, 0, 1, 1, 0], [0.0] * c, [1.0] * c])
    loss = LOSSES.get(name)()(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_extreme_logits_known_values():
    # A confident wrong negative (z = +1e4, y = 0): BCE pays z; ASL pays (1-m)^g * -log(m).
    z = torch.tensor([[1e4]])
    y = torch.zeros(1, 1)
    assert BCELoss()(z, y).item() == pytest.approx(1e4, rel=1e-6)
    assert AsymmetricLoss(gamma_neg=4, clip=0.05)(z, y).item() == pytest.approx(0.95**4 * -math.log(0.05), rel=1e-5)
    assert FocalLoss(gamma=2)(z, y).item() == pytest.approx(1e4, rel=1e-6)
    # A confident right answer costs nothing.
    for name in SIGMOID_LOSSES:
        assert LOSSES.get(name)()(torch.tensor([[1e4, -1e4]]), torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_asl_fractional_gamma_has_finite_gradient_where_clipped():
    # p < clip gives p_m = 0, where d/dp p_m^0.5 is infinite: the loss must not turn it into NaN.
    z = torch.tensor([[-6.0, -4.0, 3.0]], requires_grad=True)
    loss = AsymmetricLoss(gamma_neg=0.5, gamma_pos=0.5, clip=0.05)(z, torch.zeros(1, 3))
    loss.backward()
    assert torch.isfinite(z.grad).all()
    assert z.grad[0, 0].item() == 0.0  # discarded easy negative


@pytest.mark.parametrize("name", ALL)
def test_perfect_predictions_low_loss_and_finite_gradients(name):
    target = torch.tensor([[1.0, 0, 1, 0], [0.0, 1, 0, 0]])
    logits = (target * 2 - 1) * 30.0
    logits.requires_grad_()
    loss = LOSSES.get(name)()(logits, target)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    if name == "softmax_ml":  # the best a softmax can do on a two-label row is log 2
        assert loss.item() == pytest.approx(math.log(2) / 2, rel=1e-4)
    else:
        assert loss.item() < 1e-9


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_computed_in_float32(name, dtype):
    logits, target = _batch(9)
    low = logits.to(dtype).requires_grad_()
    loss = LOSSES.get(name)()(low, target.to(dtype))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(low.grad).all()
    ref = LOSSES.get(name)()(low.detach().float(), target.float())
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    big = torch.full((2, 10), 6e4 if dtype == torch.float16 else 1e30, dtype=dtype)
    assert torch.isfinite(LOSSES.get(name)()(big, torch.zeros(2, 10, dtype=dtype)))


def test_autocast_does_not_lower_precision():
    logits, target = _batch(10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for name in ALL:
            loss = LOSSES.get(name)()(logits.float(), target.float())
            assert loss.dtype == torch.float32


# ---------------------------------------------------------------- contracts and bad input


@pytest.mark.parametrize("name", ALL)
def test_refuses_class_index_targets(name):
    with pytest.raises(ValueError, match=r"multi-hot targets shaped like the logits \(4, 3\)"):
        LOSSES.get(name)()(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SoftmaxMultiLabelLoss(empty="skip"), "empty must be one of uniform, ignore"),
        (lambda: BCELoss(pos_weight=[-1.0, 1.0]), "pos_weight must be a number or a list of numbers >= 0"),
        (lambda: AsymmetricLoss(gamma_neg=-1), "gamma_neg and gamma_pos must be >= 0"),
        (lambda: AsymmetricLoss(clip=1.0), r"clip must be in \[0, 1\)"),
        (lambda: FocalLoss(gamma=-0.5), "gamma must be >= 0"),
        (lambda: FocalLoss(alpha=1.5), r"alpha must be in \[0, 1\] or null"),
        (lambda: BCELoss(reduction="avg"), "reduction must be one of mean, sum, none"),
    ],
)
def test_bad_hyper_parameters(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_pos_weight_length_must_match_categories():
    with pytest.raises(ValueError, match="pos_weight has 3 entries for 10 categories"):
        BCELoss(pos_weight=[1.0, 2.0, 3.0])(*[t.float() for t in _batch(0)])


def test_task_kinds_and_activations():
    assert SoftmaxMultiLabelLoss.activation == "softmax"
    for name in SIGMOID_LOSSES:
        assert LOSSES.get(name).activation == "sigmoid"
    for name in ALL:
        assert LOSSES.get(name).task_kinds == ("multilabel",)
        assert not LOSSES.get(name).needs_aux


@pytest.mark.parametrize("name", ["softmax_ml", "bce"])
@pytest.mark.parametrize("kind", ["ordinal", "partial", "multiclass"])
def test_multilabel_losses_refused_on_single_label_tasks(name, kind):
    task = Task(kind, 5, base_kind="ordinal" if kind == "partial" else None)
    with pytest.raises(SoftlossError, match=rf"loss={name} does not fit data=x \(task kind '{kind}'\); losses for {kind} data: "):
        check_loss_task(LOSSES.get(name)(), task, "x", "one")


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("name", ALL)
def test_loss_config_composes_and_instantiates(compose_cfg, name):
    from hydra.utils import instantiate

    cfg = compose_cfg([f"loss={name}", "data=multilabel_shapes"])
    loss = instantiate(cfg.loss)
    assert type(loss) is LOSSES.get(name)
    logits, target = _batch(0)
    assert torch.isfinite(loss(logits.float(), target.float()))


# ---------------------------------------------------------------- hand-derived gradients (gradcheck, float64)


def _gc_inputs(seed: int = 0, b: int = 5, c: int = 7):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(b, c, generator=g, dtype=torch.float64) * 3).requires_grad_()
    t = (torch.rand(b, c, generator=g) < 0.3).to(torch.float64)
    t[0] = 0.0  # an empty row
    t[1, 2] = 0.4  # a soft target
    return z, t


@pytest.mark.parametrize("uniform", [True, False])
def test_softmax_ml_rows_gradcheck(uniform):
    from softloss_cli.losses.multilabel import softmax_ml_rows

    z, t = _gc_inputs(1)
    assert torch.autograd.gradcheck(lambda x: row_loss(softmax_ml_rows, x, t, uniform)[0], (z,))


def test_bce_rows_gradcheck():
    from softloss_cli.losses.multilabel import bce_rows

    z, t = _gc_inputs(2)
    assert torch.autograd.gradcheck(lambda x: row_loss(bce_rows, x, t)[0], (z,))


@pytest.mark.parametrize(("gamma", "a_pos", "a_neg"), [(2.0, 1.0, 1.0), (1.5, 0.75, 0.25), (0.0, 1.0, 1.0), (3.0, 0.25, 0.75)])
def test_focal_rows_gradcheck(gamma, a_pos, a_neg):
    from softloss_cli.losses.multilabel import focal_rows

    z, t = _gc_inputs(3)
    assert torch.autograd.gradcheck(lambda x: row_loss(focal_rows, x, t, gamma, a_pos, a_neg, scale=-1.0)[0], (z,))


@pytest.mark.parametrize(("gamma_neg", "gamma_pos", "clip"),
                         [(4.0, 0.0, 0.05), (2.0, 1.0, 0.0), (0.5, 0.5, 0.2), (0.0, 0.0, 0.0), (0.0, 2.0, 0.1),
                          (1.0, 0.0, 0.05), (1.5, 0.0, 0.1)])
def test_asl_rows_gradcheck(gamma_neg, gamma_pos, clip):
    from softloss_cli.losses.multilabel import asl_rows

    z, t = _gc_inputs(4)
    assert torch.autograd.gradcheck(
        lambda x: row_loss(asl_rows, x, t, gamma_neg, gamma_pos, clip, False, scale=-1.0)[0], (z,))


def test_asl_rows_detached_weights_gradient():
    # detach_weights: the gradient of sum w * log-terms with the weights held constant.
    from softloss_cli.losses.multilabel import asl_rows

    z, t = _gc_inputs(5)
    row_loss(asl_rows, z, t, 3.0, 2.0, 0.05, True, scale=-1.0)[0].sum().backward()
    x = z.detach().clone().requires_grad_()
    s = torch.sigmoid(x)
    pm = (s - 0.05).clamp_min(0)
    w_pos, w_neg = ((1 - s) ** 2).detach(), (pm**3).detach()
    ref = -(t * w_pos * torch.nn.functional.logsigmoid(x) + (1 - t) * w_neg * torch.log(1 - pm)).sum()
    ref.backward()
    torch.testing.assert_close(z.grad, x.grad)
