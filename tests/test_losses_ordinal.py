"""Ordinal losses against float64 loops written here, edge cases, configs and compatibility checks."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hydra.utils import instantiate

from softloss_cli.config import catalog
from softloss_cli.config.compat import check_loss_task
from softloss_cli.errors import SoftlossError
from softloss_cli.losses import (
    LOSSES,
    ClassDistanceWeightedCELoss,
    ExpectedValueL1Loss,
    RankedProbabilityLoss,
    SoftOrdinalLoss,
    SquaredEMDLoss,
)
from softloss_cli.tasks import Task

ORDINAL = ("rps", "emd2", "ev_l1", "ev_l1_ce", "cdw_ce", "sord")
SEEDS = (0, 1, 2)
SHAPES = ((1, 2), (7, 3), (64, 10), (33, 30))  # (B, C)


def _inputs(seed: int, b: int, c: int, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g, dtype=torch.float64) * scale
    target = torch.randint(0, c, (b,), generator=g)
    return logits, target


# ---------------------------------------------------------------- float64 references (loops over classes)


def _softmax_row(z: list[float]) -> list[float]:
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def _log_softmax_row(z: list[float]) -> list[float]:
    m = max(z)
    lse = m + math.log(sum(math.exp(v - m) for v in z))
    return [v - lse for v in z]


def ref_rps(logits, target, values=None) -> list[float]:
    out = []
    for z, y in zip(logits.tolist(), target.tolist()):
        p = _softmax_row(z)
        c = len(p)
        v = values or list(range(c))
        total, cdf = 0.0, 0.0
        for k in range(c - 1):
            cdf += p[k]
            step = 1.0 if k >= y else 0.0
            total += (v[k + 1] - v[k]) * (cdf - step) ** 2
        out.append(total)
    return out


def ref_ev_l1(logits, target, ce_weight=0.0, values=None) -> list[float]:
    out = []
    for z, y in zip(logits.tolist(), target.tolist()):
        p = _softmax_row(z)
        v = values or list(range(len(p)))
        expected = sum(p[k] * v[k] for k in range(len(p)))
        out.append(abs(expected - v[y]) - ce_weight * _log_softmax_row(z)[y])
    return out


def ref_cdw_ce(logits, target, alpha=1.0, normalize=True) -> list[float]:
    out = []
    for z, y in zip(logits.tolist(), target.tolist()):
        p = _softmax_row(z)
        c = len(p)
        # Z: mean of |i - j|^alpha over all C x C pairs (the diagonal counts as 0)
        pairs = [abs(i - j) ** alpha if i != j else 0.0 for i in range(c) for j in range(c)]
        scale = sum(pairs) / len(pairs) if normalize else 1.0
        total = 0.0
        for i in range(c):
            if i == y:
                continue
            total -= abs(i - y) ** alpha / scale * math.log(1.0 - p[i])
        out.append(total)
    return out


def ref_sord(logits, target, alpha=1.0, power=1.0, values=None) -> list[float]:
    out = []
    for z, y in zip(logits.tolist(), target.tolist()):
        c = len(z)
        v = values or list(range(c))
        q = _softmax_row([-alpha * abs(v[k] - v[y]) ** power for k in range(c)])
        logp = _log_softmax_row(z)
        out.append(sum(q[k] * (math.log(q[k]) - logp[k]) for k in range(c) if q[k] > 0))
    return out


CASES = {
    "rps": (lambda: RankedProbabilityLoss(reduction="none"), ref_rps),
    "emd2": (lambda: SquaredEMDLoss(reduction="none"), ref_rps),
    "ev_l1": (lambda: ExpectedValueL1Loss(reduction="none"), ref_ev_l1),
    "ev_l1_ce": (lambda: ExpectedValueL1Loss(ce_weight=0.7, reduction="none"),
                 lambda z, y: ref_ev_l1(z, y, ce_weight=0.7)),
    "cdw_ce": (lambda: ClassDistanceWeightedCELoss(reduction="none"), ref_cdw_ce),
    "cdw_ce_raw_a5": (lambda: ClassDistanceWeightedCELoss(alpha=5, normalize=False, reduction="none"),
                      lambda z, y: ref_cdw_ce(z, y, alpha=5.0, normalize=False)),
    "cdw_ce_a0": (lambda: ClassDistanceWeightedCELoss(alpha=0, reduction="none"),
                  lambda z, y: ref_cdw_ce(z, y, alpha=0.0)),
    "cdw_ce_a2": (lambda: ClassDistanceWeightedCELoss(alpha=2.5, reduction="none"),
                  lambda z, y: ref_cdw_ce(z, y, alpha=2.5)),
    "sord": (lambda: SoftOrdinalLoss(reduction="none"), ref_sord),
    "sord_sq_a3": (lambda: SoftOrdinalLoss(alpha=3.0, power=2.0, reduction="none"),
                   lambda z, y: ref_sord(z, y, alpha=3.0, power=2.0)),
}


# ---------------------------------------------------------------- values against the references


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("b,c", SHAPES)
def test_per_sample_values_match_float64_loop(case, seed, b, c):
    make, ref = CASES[case]
    logits, target = _inputs(seed, b, c)
    got = make()(logits.float(), target)
    expected = torch.tensor(ref(logits.float().double(), target), dtype=torch.float64)
    assert got.shape == (b,)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", ["rps", "ev_l1", "cdw_ce", "sord"])
def test_reductions_mean_sum_none(name):
    logits, target = _inputs(0, 16, 8)
    cls = LOSSES.get(name)
    per = cls(reduction="none")(logits, target)
    torch.testing.assert_close(cls(reduction="mean")(logits, target), per.mean())
    torch.testing.assert_close(cls(reduction="sum")(logits, target), per.sum())
    with pytest.raises(ValueError, match="reduction must be one of mean, sum, none"):
        cls(reduction="avg")


def test_label_values_change_ev_l1_emd2_and_sord():
    values = [0.0, 1.0, 4.0, 10.0, 11.0]
    logits, target = _inputs(3, 20, 5)
    cases = [
        (ExpectedValueL1Loss(label_values=values, reduction="none"), ref_ev_l1(logits, target, values=values)),
        (SquaredEMDLoss(label_values=values, reduction="none"), ref_rps(logits, target, values=values)),
        (SoftOrdinalLoss(label_values=values, reduction="none"), ref_sord(logits, target, values=values)),
    ]
    for loss, ref in cases:
        torch.testing.assert_close(loss(logits, target).double(), torch.tensor(ref, dtype=torch.float64),
                                   rtol=2e-5, atol=2e-5)
    # rps counts class steps: uneven values leave it unchanged, and emd2 now differs from it.
    rps = RankedProbabilityLoss(reduction="none")(logits, target)
    torch.testing.assert_close(rps.double(), torch.tensor(ref_rps(logits, target), dtype=torch.float64),
                               rtol=2e-5, atol=2e-5)
    assert not torch.allclose(rps, cases[1][0](logits, target))


def test_emd2_equals_rps_for_unit_spaced_values():
    logits, target = _inputs(4, 50, 30)
    torch.testing.assert_close(SquaredEMDLoss()(logits, target), RankedProbabilityLoss()(logits, target))
    shifted = SquaredEMDLoss(label_values=[5 + k for k in range(30)])
    torch.testing.assert_close(shifted(logits, target), RankedProbabilityLoss()(logits, target))


def test_logit_scale_and_penalty_apply():
    logits, target = _inputs(5, 10, 6)
    scaled = RankedProbabilityLoss(logit_scale=2.5, reduction="none")(logits, target)
    expected = torch.tensor(ref_rps(logits * 2.5, target), dtype=torch.float64)
    torch.testing.assert_close(scaled.double(), expected, rtol=2e-5, atol=2e-5)


def test_ev_l1_ce_exposes_its_parts():
    logits, target = _inputs(6, 12, 7)
    loss = ExpectedValueL1Loss(ce_weight=0.5)
    total = loss(logits, target)
    parts = loss.last_parts
    assert set(parts) >= {"main", "ev_l1", "ce"}
    torch.testing.assert_close(parts["main"], total.detach())
    torch.testing.assert_close(parts["ev_l1"] + 0.5 * parts["ce"], total.detach(), rtol=1e-5, atol=1e-5)
    # a second call with another loss object does not leak parts
    plain = ExpectedValueL1Loss()
    plain(logits, target)
    assert set(plain.last_parts) == {"main"}


# ---------------------------------------------------------------- minimum at the perfect prediction


def _one_hot_logits(target: torch.Tensor, c: int, big: float = 1e4) -> torch.Tensor:
    z = torch.full((len(target), c), -big)
    z[torch.arange(len(target)), target] = big
    return z


@pytest.mark.parametrize("name", ["rps", "emd2", "ev_l1", "ev_l1_ce", "cdw_ce"])
def test_zero_at_a_one_hot_prediction_of_the_label(name):
    target = torch.tensor([0, 3, 29, 15])
    loss = instantiate(dict(catalog.load("loss", name)))
    assert loss(_one_hot_logits(target, 30), target).item() == 0.0


def test_sord_is_zero_at_its_soft_target_and_not_at_one_hot():
    target = torch.tensor([0, 4, 9])
    loss = SoftOrdinalLoss(alpha=1.0)
    log_q = loss.log_soft_targets(target, 10, torch.device("cpu"))
    assert loss(log_q, target).abs().item() < 1e-6  # logits = log q give p = q
    assert loss(_one_hot_logits(target, 10, big=20.0), target).item() > 1.0
    q = log_q.exp()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(3))
    assert (q.argmax(dim=1) == target).all()


@pytest.mark.parametrize("name", ["rps", "ev_l1", "cdw_ce", "sord"])
def test_moving_mass_farther_from_the_label_costs_more(name):
    # all mass on class y + d, for d = 1, 2, 4: the ordinal losses grow with d (CE would not).
    loss = LOSSES.get(name)()
    target = torch.tensor([5])
    values = [loss(_one_hot_logits(torch.tensor([5 + d]), 12, big=10.0), target).item() for d in (1, 2, 4)]
    assert values[0] < values[1] < values[2]


# ---------------------------------------------------------------- numerics: huge logits, low precision


@pytest.mark.parametrize("name", ORDINAL)
@pytest.mark.parametrize("big", [1e4, -1e4])
def test_finite_loss_and_gradients_for_huge_logits(name, big):
    cfg = catalog.load("loss", name)
    loss = instantiate(dict(cfg))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 30, generator=g) * big
    z[:, 0] = big  # ties and saturated classes
    z[:, 29] = -big
    z.requires_grad_(True)
    target = torch.randint(0, 30, (16,), generator=g)
    target[:4] = torch.tensor([0, 29, 1, 28])
    value = loss(z, target)
    value.backward()
    assert torch.isfinite(value), f"{name}: loss {value}"
    assert torch.isfinite(z.grad).all(), f"{name}: non-finite gradient"


@pytest.mark.parametrize("name", ["rps", "emd2"])
def test_cdf_errors_keep_relative_precision_near_a_one_hot_prediction(name):
    # p_y ~ 1 - 3e-7: above the label the error is a suffix sum of ~1e-8 probabilities; 1 - F_k
    # in float32 would round it to 0 or 6e-8 and the loss would lose all relative precision.
    z = torch.zeros(3, 30)
    target = torch.tensor([0, 15, 29])
    z[torch.arange(3), target] = 18.0
    got = LOSSES.get(name)(reduction="none")(z, target).double()
    expected = torch.tensor(ref_rps(z.double(), target), dtype=torch.float64)
    assert (expected > 0).all()
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=0.0)


def test_cdw_ce_normalised_costs_about_one_at_a_uniform_prediction():
    # averaged over labels, a uniform prediction costs sum_i w_i * -log(1 - 1/C) / C-ish ~ 1
    c = 30
    loss = ClassDistanceWeightedCELoss()
    target = torch.arange(c)
    value = loss(torch.zeros(c, c), target).item()
    assert value == pytest.approx(-c * math.log(1 - 1 / c), rel=1e-5)  # = sum over pairs of w / C
    raw = ClassDistanceWeightedCELoss(normalize=False)(torch.zeros(c, c), target).item()
    assert raw / value == pytest.approx(loss.weight_scale(c), rel=1e-5)


def test_cdw_ce_is_exact_where_one_minus_softmax_rounds_to_zero():
    # p_0 = 1 - exp(-1e4) rounds to 1: log(1 - p_0) must be -1e4, not -inf.
    z = torch.tensor([[1e4, 0.0]])
    loss = ClassDistanceWeightedCELoss(alpha=1.0, normalize=False)
    assert loss(z, torch.tensor([1])).item() == pytest.approx(1e4, rel=1e-6)
    z3 = torch.tensor([[0.0, 1e4, -1e4]], requires_grad=True)
    value = ClassDistanceWeightedCELoss(alpha=1.0, normalize=False)(z3, torch.tensor([0]))
    value.backward()
    assert value.item() == pytest.approx(1e4, rel=1e-6)  # -1 * log(1 - p_1) with p_1 ~ 1
    assert torch.isfinite(z3.grad).all()


@pytest.mark.parametrize("name", ORDINAL)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_are_computed_in_float32(name, dtype):
    loss = instantiate(dict(catalog.load("loss", name)))
    logits, target = _inputs(1, 32, 30)
    low = logits.to(dtype).requires_grad_(True)
    value = loss(low, target)
    assert value.dtype == torch.float32
    reference = loss(low.detach().float(), target)
    torch.testing.assert_close(value, reference)  # the cast happens first, then float32 maths
    value.backward()
    assert low.grad.dtype == dtype and torch.isfinite(low.grad.float()).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = loss(logits.float(), target)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, loss(logits.float(), target))


@pytest.mark.parametrize("name", ORDINAL)
def test_gradients_match_finite_differences(name):
    loss = instantiate(dict(catalog.load("loss", name)))
    logits, target = _inputs(2, 4, 6, scale=1.0)
    z = logits.clone().requires_grad_(True)
    # torch's gradcheck in float64 would bypass the float32 cast; compare analytic float32
    # gradients with central differences of the float64 reference instead.
    loss(z.float(), target).backward()
    ref = {
        "rps": ref_rps, "emd2": ref_rps, "ev_l1": ref_ev_l1,
        "ev_l1_ce": lambda a, b: ref_ev_l1(a, b, ce_weight=1.0), "cdw_ce": ref_cdw_ce, "sord": ref_sord,
    }[name]
    eps = 1e-5
    numeric = torch.zeros_like(logits)
    for i in range(logits.shape[0]):
        for j in range(logits.shape[1]):
            plus, minus = logits.clone(), logits.clone()
            plus[i, j] += eps
            minus[i, j] -= eps
            numeric[i, j] = (sum(ref(plus, target)) - sum(ref(minus, target))) / (2 * eps) / logits.shape[0]
    torch.testing.assert_close(z.grad, numeric, rtol=1e-3, atol=1e-4)


def test_single_class_losses_are_zero_and_finite():
    z = torch.randn(3, 1, requires_grad=True)
    y = torch.zeros(3, dtype=torch.int64)
    for name in ("rps", "emd2", "ev_l1", "cdw_ce", "sord"):
        kwargs = {"label_values": None} if name in ("emd2", "ev_l1", "sord") else {}
        value = LOSSES.get(name)(**kwargs)(z, y)
        assert value.item() == 0.0
        value.backward()
        assert torch.isfinite(z.grad).all()
        z.grad = None


# ---------------------------------------------------------------- label values: validation and the task


@pytest.mark.parametrize(
    "values,message",
    [
        ([0, 1, 1, 2], "label_values must be strictly increasing, got 1 then 1 at positions 1 and 2"),
        ([3, 2, 1], "label_values must be strictly increasing, got 3 then 2 at positions 0 and 1"),
        ([0, float("nan"), 2], "label_values must be finite"),
        ([1], r"label_values needs one value per class \(at least 2\), got 1"),
        ("0,1,2", "label_values must be a list of numbers or null"),
        ([0, "a"], "label_values must be a list of numbers"),
    ],
)
@pytest.mark.parametrize("cls", [ExpectedValueL1Loss, SquaredEMDLoss, SoftOrdinalLoss])
def test_bad_label_values_are_refused(cls, values, message):
    with pytest.raises(ValueError, match=message):
        cls(label_values=values)


def test_label_value_count_must_match_the_classes():
    loss = ExpectedValueL1Loss(label_values=[0, 1, 2])
    with pytest.raises(ValueError, match="loss.label_values has 3 values but the logits have 5 classes"):
        loss(torch.zeros(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="loss.label_values has 3 values but the data has 5 classes"):
        loss.bind_task(Task("ordinal", 5))


def test_bind_task_adopts_the_task_values_only_when_none_were_given():
    task = Task("ordinal", 4, label_values=(10, 20, 40, 80))
    logits, target = _inputs(7, 9, 4)
    bound = ExpectedValueL1Loss(reduction="none")
    default = bound(logits, target)  # 0..C-1 before binding
    torch.testing.assert_close(default.double(), torch.tensor(ref_ev_l1(logits, target), dtype=torch.float64),
                               rtol=2e-5, atol=2e-5)
    bound.bind_task(task)
    torch.testing.assert_close(bound(logits, target).double(),
                               torch.tensor(ref_ev_l1(logits, target, values=[10, 20, 40, 80]), dtype=torch.float64),
                               rtol=2e-5, atol=2e-5)
    explicit = ExpectedValueL1Loss(label_values=[0, 1, 2, 3], reduction="none")
    explicit.bind_task(task)  # explicit values win over the task's
    torch.testing.assert_close(explicit(logits, target), default)


@pytest.mark.parametrize("bad", [{"ce_weight": -1.0}])
def test_bad_ev_l1_parameters(bad):
    with pytest.raises(ValueError, match="ce_weight must be >= 0, got -1.0"):
        ExpectedValueL1Loss(**bad)


def test_bad_cdw_and_sord_parameters():
    with pytest.raises(ValueError, match="alpha must be >= 0, got -1.0"):
        ClassDistanceWeightedCELoss(alpha=-1.0)
    with pytest.raises(ValueError, match="alpha must be > 0, got 0.0"):
        SoftOrdinalLoss(alpha=0.0)
    with pytest.raises(ValueError, match="power must be > 0, got -2.0"):
        SoftOrdinalLoss(power=-2.0)
    with pytest.raises(ValueError, match="logit_scale must be > 0"):
        RankedProbabilityLoss(logit_scale=0.0)


# ---------------------------------------------------------------- registry, configs, compatibility


@pytest.mark.parametrize("name", ORDINAL)
def test_config_composes_and_instantiates_the_registered_class(compose_cfg, name):
    cfg = compose_cfg([f"loss={name}", "data=ordinal_images", "model=small_cnn"])
    loss = instantiate(cfg.loss)
    registered = "ev_l1" if name == "ev_l1_ce" else name
    assert type(loss) is LOSSES.get(registered)
    assert loss.task_kinds == ("ordinal", "multiclass") and loss.order_sensitive
    assert catalog.describe("loss", name)  # the one-line description `softloss list` shows
    model = instantiate(cfg.model, input_shape=[1, 32, 32], num_classes=30)
    logits = model.eval()(torch.randn(2, 1, 32, 32))
    assert torch.isfinite(loss(logits, torch.tensor([0, 29])))


def test_ev_l1_ce_config_adds_ce(compose_cfg):
    assert instantiate(compose_cfg(["loss=ev_l1_ce"]).loss).ce_weight == 1.0
    assert instantiate(compose_cfg(["loss=ev_l1"]).loss).ce_weight == 0.0


def test_label_values_override_from_the_command_line(compose_cfg):
    loss = instantiate(compose_cfg(["loss=ev_l1", "loss.label_values=[18,25,35,45,60]"]).loss)
    assert loss.label_values == (18.0, 25.0, 35.0, 45.0, 60.0)


def test_experiment_preset_composes_the_sweep(compose_cfg):
    cfg = compose_cfg(["experiment=ordinal"], return_hydra_config=True)
    assert cfg.data.name == "ordinal_images"
    assert cfg.model._target_.endswith("SmallCNN")
    params = cfg.hydra.sweeper.params
    assert [s.strip() for s in params.loss.split(",")] == ["ce", "rps", "ev_l1", "ev_l1_ce", "cdw_ce", "emd2", "sord",
                                                           "coral", "corn", "clm", "unimodal", "wk"]
    assert [s.strip() for s in str(params.seed).split(",")] == ["0", "1", "2"]
    assert catalog.describe("experiment", "ordinal")


def test_ordinal_losses_accept_ordinal_silently_and_warn_on_multiclass():
    loss = RankedProbabilityLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_loss_task(loss, Task("ordinal", 30), "ordinal_images", "one", "rps")
    with pytest.warns(UserWarning, match="loss=rps is an ordinal loss and data=digits is multiclass"):
        check_loss_task(loss, Task("multiclass", 10), "digits", "one", "rps")


@pytest.mark.parametrize("name", ORDINAL)
def test_ordinal_losses_are_refused_on_multilabel_data(name):
    loss = instantiate(dict(catalog.load("loss", name)))
    with pytest.raises(SoftlossError) as info:
        check_loss_task(loss, Task("multilabel", 5), "multilabel_shapes", "one", name)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"loss={name} does not fit data=multilabel_shapes (task kind 'multilabel')")
    assert "rps" not in message.split("losses for multilabel data:")[1]


# ---------------------------------------------------------------- hand-derived gradients (gradcheck, float64)


def _gc_logits(seed: int, b: int = 6, c: int = 7, scale: float = 2.0):
    logits, target = _inputs(seed, b, c, scale)
    target[:2] = torch.tensor([0, c - 1])
    return logits.requires_grad_(), target


@pytest.mark.parametrize("gaps", [None, [1.0, 3.0, 0.5, 2.0, 1.0, 4.0]])
def test_cdf_rows_gradcheck(gaps):
    from softloss_cli.losses.base import row_loss
    from softloss_cli.losses.ordinal import cdf_rows

    z, y = _gc_logits(0)
    g = None if gaps is None else torch.tensor(gaps, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: row_loss(cdf_rows, x, y, g, scale=-2.0)[0], (z,))


@pytest.mark.parametrize("ce_weight", [0.0, 0.7])
def test_ev_l1_rows_gradcheck(ce_weight):
    from softloss_cli.losses.base import row_loss
    from softloss_cli.losses.ordinal import ev_l1_rows

    z, y = _gc_logits(1)
    values = torch.tensor([0.0, 1.0, 4.0, 10.0, 11.0, 12.5, 20.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: row_loss(ev_l1_rows, x, y, values, ce_weight)[0], (z,))


@pytest.mark.parametrize("all_rows", [False, True])
@pytest.mark.parametrize("alpha", [1.0, 0.0, 2.5])
def test_cdw_rows_gradcheck(alpha, all_rows):
    """Both ways of handling rows where 1 - p_top underflows: a subset (eager CPU) and every
    row (CUDA, compiled); with the per-class table and with per-sample weights."""
    from softloss_cli.losses.base import row_loss
    from softloss_cli.losses.ordinal import cdw_rows

    z, y = _gc_logits(2)
    with torch.no_grad():
        z[2, 3] += 6.0  # a top class with p > 1/2
        z[3, 1] += 60.0  # 1 - p_top ~ e^-60: the log-domain (leave-one-out) path
    loss = ClassDistanceWeightedCELoss(alpha=alpha)
    table = loss.weight_table(y, 7, torch.device("cpu")).double()
    w = loss.weight_rows(y, 7, torch.device("cpu")).double()
    assert torch.autograd.gradcheck(lambda x: row_loss(cdw_rows, x, y, table, True, all_rows=all_rows)[0], (z,))
    assert torch.autograd.gradcheck(lambda x: row_loss(cdw_rows, x, y, w, False, all_rows=all_rows)[0], (z,))


def test_kl_rows_gradcheck():
    from softloss_cli.losses.base import row_loss
    from softloss_cli.losses.ordinal import kl_rows

    z, y = _gc_logits(3)
    log_q = SoftOrdinalLoss(alpha=1.5).log_soft_targets(y, 7, torch.device("cpu")).double()
    q = log_q.exp()
    assert torch.autograd.gradcheck(lambda x: row_loss(kl_rows, x, None, q, (q * log_q).sum(1), q.sum(1))[0], (z,))


def test_soft_label_tables_hold_no_float32_subnormals():
    """SORD's and unimodal's soft labels at C = 100 reach far below float32's normal range; the
    cached tables hold 0 there (a subnormal costs a microcode assist per product on x86), and the
    loss still matches the float64 KL of the unflushed labels."""
    from softloss_cli.losses import LOSSES

    tiny = torch.finfo(torch.float32).tiny
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(64, 100, generator=g) * 3, torch.randint(0, 100, (64,), generator=g)
    for loss in (LOSSES.get("sord")(), LOSSES.get("unimodal")(family="binomial")):
        value = loss(logits, target)
        if hasattr(loss, "_cached"):
            q = loss._cached(100, "cpu")[0]
            exact = loss.soft_targets(100)[target]
        else:
            q = loss._values_cache[("sord", torch.device("cpu"), 100)][0]
            exact = loss.log_soft_targets(torch.arange(100), 100, "cpu").double().exp()[target]
        assert ((exact > 0) & (exact < tiny)).any()  # the case exists
        assert not ((q > 0) & (q < tiny)).any()
        log_p = torch.log_softmax(logits.double(), dim=1)
        kl = (torch.special.xlogy(exact, exact) - exact * log_p).sum(dim=1).mean()
        torch.testing.assert_close(value.double(), kl, rtol=1e-5, atol=1e-6)
