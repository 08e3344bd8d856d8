"""Ordinal output layers (CORAL, CORN, CLM) and their losses against float64 references written
here, edge cases, the head/loss/task checks, configs, and end-to-end runs of the real CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli
from hydra.utils import instantiate

from softloss_cli.config.compat import check_head
from softloss_cli.errors import SoftlossError
from softloss_cli.losses import (
    LOG_FLOOR,
    ClmLoss,
    CoralLoss,
    CornLoss,
    CrossEntropyLoss,
    RankedProbabilityLoss,
    clm_log_probs,
    coral_log_probs,
    corn_log_probs,
    ordered_thresholds,
)
from softloss_cli.losses.multilabel import BCELoss
from softloss_cli.models import SmallCNN
from softloss_cli.models.heads import make_head
from softloss_cli.tasks import Task

LINKS = ("logit", "probit", "cloglog")


def _rand(seed, b, w, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, w, generator=g, dtype=torch.float64) * scale, torch.randint(0, w + 1, (b,), generator=g)


# ---------------------------------------------------------------- float64 references (loops)


def _cdf(link: str, x: float) -> float:
    if link == "logit":
        return 1 / (1 + math.exp(-x))
    if link == "probit":
        return 0.5 * math.erfc(-x / math.sqrt(2))
    return -math.expm1(-math.exp(x))


def ref_clm(a: torch.Tensor, link: str) -> list[list[float]]:
    out = []
    for row in a.tolist():
        f = [0.0] + [_cdf(link, x) for x in row] + [1.0]
        out.append([f[k + 1] - f[k] for k in range(len(row) + 1)])
    return out


def ref_corn(c: torch.Tensor) -> list[list[float]]:
    out = []
    for row in c.tolist():
        above, probs = 1.0, []
        for x in row:
            s = 1 / (1 + math.exp(-x))
            probs.append(above * (1 - s))
            above *= s
        out.append(probs + [above])
    return out


def ref_coral_loss(s, y) -> float:
    total = 0.0
    for row, label in zip(s.tolist(), y.tolist()):
        for k, x in enumerate(row):
            p = 1 / (1 + math.exp(-x))
            total -= math.log(p) if label > k else math.log(1 - p)
    return total / len(y)


def ref_corn_loss(c, y) -> float:
    total, pairs = 0.0, 0
    for row, label in zip(c.tolist(), y.tolist()):
        for k, x in enumerate(row):
            if label >= k:  # task k sees y > k-1
                p = 1 / (1 + math.exp(-x))
                total -= math.log(p) if label > k else math.log(1 - p)
                pairs += 1
    return total / pairs


# ---------------------------------------------------------------- class distributions


@pytest.mark.parametrize("link", LINKS)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("c", [2, 5, 30])
def test_clm_probabilities_match_the_cdf_differences(link, seed, c):
    g, _ = _rand(seed, 17, 1)
    theta = ordered_thresholds(torch.tensor([-1.0], dtype=torch.float64),
                               torch.linspace(-1, 1, c - 2, dtype=torch.float64))
    a = theta[None, :] - g
    np.testing.assert_allclose(clm_log_probs(a, link).exp().numpy(), ref_clm(a, link), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("c", [2, 5, 30])
def test_corn_probabilities_match_the_chained_product(seed, c):
    x, _ = _rand(seed, 17, c - 1, 3.0)
    np.testing.assert_allclose(corn_log_probs(x).exp().numpy(), ref_corn(x), rtol=1e-9, atol=1e-15)


def test_coral_clamps_a_negative_difference_and_renormalises():
    s = torch.tensor([[1.0, 2.0, -1.0]], dtype=torch.float64)  # b_1 > b_0: P(y > 1) > P(y > 0)
    p = torch.sigmoid(s)[0]
    raw = torch.tensor([1 - p[0], 0.0, p[1] - p[2], p[2]])  # P(y = 1) would be p0 - p1 < 0
    lp = coral_log_probs(s)
    assert lp[0, 1].item() == pytest.approx(LOG_FLOOR - math.log(raw.sum()), abs=1e-6)
    torch.testing.assert_close(lp.exp()[0], raw / raw.sum(), atol=1e-30, rtol=1e-9)


@pytest.mark.parametrize("fn", ["coral", "corn", *LINKS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_log_probs_are_finite_with_finite_gradients_for_huge_outputs(fn, dtype):
    x = (torch.randn(32, 9, generator=torch.Generator().manual_seed(3)) * 1e4).to(dtype).requires_grad_(True)
    if fn == "coral":
        lp = coral_log_probs(x)
    elif fn == "corn":
        lp = corn_log_probs(x)
    else:
        lp = clm_log_probs(x.float().sort(dim=1).values, fn)
    assert lp.dtype == torch.float32  # computed in float32 whatever comes in
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp.exp().sum(dim=1), torch.ones(32), atol=1e-5, rtol=0)
    (lp * torch.randn_like(lp)).sum().backward()
    assert torch.isfinite(x.grad.float()).all()


def test_ordered_thresholds_increase_for_any_raw_gaps():
    theta = ordered_thresholds(torch.tensor([0.5]), torch.tensor([-30.0, 0.0, 5.0]), min_gap=0.1)
    assert (theta.diff() > 0).all() and theta[0] == 0.5


# ---------------------------------------------------------------- heads


@pytest.mark.parametrize("head,key", [("coral", "cum_logits"), ("corn", "cond_logits"), ("clm", "cum_logits")])
def test_heads_give_log_probabilities_and_their_native_outputs(head, key):
    out = make_head(12, 6, head)(torch.randn(5, 12))
    assert out["logits"].shape == (5, 6) and out[key].shape == (5, 5)
    torch.testing.assert_close(torch.softmax(out["logits"], dim=1), out["logits"].exp())


def test_clm_head_thresholds_start_evenly_spaced_and_stay_ordered():
    head = make_head(4, 5, "clm", "probit")
    torch.testing.assert_close(head.thresholds().detach(), torch.tensor([-1.5, -0.5, 0.5, 1.5]), atol=1e-4, rtol=0)
    with torch.no_grad():
        head.raw_gaps.fill_(-50.0)  # softplus(-50) ~ 2e-22: rounds away in float32
    assert (head.thresholds().diff() >= 0).all()
    out = head(torch.randn(3, 4))
    assert torch.isfinite(out["logits"]).all()  # coinciding thresholds: those classes get LOG_FLOOR


def test_linear_head_is_unchanged_and_a_second_head_joins_any_output_layer():
    net = SmallCNN([1, 16, 16], 5, channels=(4,))
    assert torch.is_tensor(net(torch.randn(2, 1, 16, 16)))
    assert {"head.weight", "head.bias"} <= set(net.state_dict())  # checkpoints of older runs still load
    out = SmallCNN([1, 16, 16], 5, channels=(4,), heads="two", head="corn")(torch.randn(2, 1, 16, 16))
    assert set(out) == {"logits", "cond_logits", "aux_logits"}


def test_bad_head_names_are_refused_in_one_line():
    with pytest.raises(SoftlossError, match=r"model.head must be one of linear, coral, corn, clm, got 'cumlink'"):
        make_head(4, 5, "cumlink")
    with pytest.raises(SoftlossError, match=r"model.head_link must be one of logit, probit, cloglog, got 'cauchit'"):
        make_head(4, 5, "clm", "cauchit")
    with pytest.raises(SoftlossError, match=r"needs at least 2 classes"):
        make_head(4, 1, "coral")


# ---------------------------------------------------------------- losses


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("c", [2, 5, 30])
def test_coral_and_corn_losses_match_float64_loops(seed, c):
    x, y = _rand(seed, 33, c - 1, 3.0)
    assert CoralLoss()(torch.zeros(33, c), y, cum_logits=x).item() == pytest.approx(ref_coral_loss(x, y), rel=1e-5)
    assert CornLoss()(torch.zeros(33, c), y, cond_logits=x).item() == pytest.approx(ref_corn_loss(x, y), rel=1e-5)


def test_head_loss_reductions():
    x, y = _rand(4, 20, 4, 3.0)
    z = torch.zeros(20, 5)
    per = CoralLoss(reduction="none")(z, y, cum_logits=x)
    assert per.shape == (20,)
    assert CoralLoss(reduction="sum")(z, y, cum_logits=x).item() == pytest.approx(per.sum().item(), rel=1e-6)
    corn_per = CornLoss(reduction="none")(z, y, cond_logits=x)
    pairs = sum(min(int(t), 3) + 1 for t in y)
    assert CornLoss()(z, y, cond_logits=x).item() == pytest.approx(corn_per.sum().item() / pairs, rel=1e-6)


@pytest.mark.parametrize("link", LINKS)
def test_clm_loss_is_the_nll_of_the_class_distribution(link):
    head = make_head(8, 6, "clm", link)
    out = head(torch.randn(10, 8))
    y = torch.randint(0, 6, (10,))
    expected = -out["logits"].gather(1, y[:, None]).mean()
    assert ClmLoss()(out["logits"], y).item() == pytest.approx(expected.item(), rel=1e-6)


def test_head_losses_are_finite_for_huge_outputs_and_zero_when_certain_and_right():
    x = torch.tensor([[1e4, 1e4, -1e4, -1e4]], requires_grad=True)
    y = torch.tensor([2])
    for loss, key in ((CoralLoss(), "cum_logits"), (CornLoss(), "cond_logits")):
        value = loss(torch.zeros(1, 5), y, **{key: x})
        assert value.item() == 0.0
        value.backward()
        assert torch.isfinite(x.grad).all()
        x.grad = None
    wrong = CoralLoss()(torch.zeros(1, 5), torch.tensor([0]), cum_logits=x)
    assert wrong.item() == pytest.approx(2e4, rel=1e-6)


def test_head_losses_name_the_head_they_need():
    with pytest.raises(SoftlossError, match=r"loss=coral needs the outputs of model.head=coral"):
        CoralLoss()(torch.zeros(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"loss=corn trains model.head=corn, got head='coral'"):
        CornLoss(head="coral")


# ---------------------------------------------------------------- head / loss / task checks


ORDINAL = Task("ordinal", 30)


@pytest.mark.parametrize("loss,head,message", [
    (CoralLoss(), "linear", "loss=coral needs model.head=coral (got model.head=linear)"),
    (ClmLoss(), "corn", "loss=clm needs model.head=clm (got model.head=corn)"),
    (CrossEntropyLoss(), "coral", "model.head=coral trains only with loss=coral, got loss=ce"),
    (RankedProbabilityLoss(), "corn", "model.head=corn trains only with loss=corn, got loss=rps"),
    (BCELoss(), "clm", "model.head=clm gives class probabilities; loss=bce is a sigmoid loss"),
])
def test_a_head_that_does_not_fit_the_loss_is_refused(loss, head, message):
    with pytest.raises(SoftlossError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_head(loss, ORDINAL, "ordinal_images", head)


def test_a_head_that_does_not_fit_the_task_is_refused():
    with pytest.raises(SoftlossError, match=r"model.head=clm is an ordinal output layer; data=multilabel_shapes is multilabel"):
        check_head(CrossEntropyLoss(), Task("multilabel", 5), "multilabel_shapes", "clm")


@pytest.mark.parametrize("loss,head", [(CoralLoss(), "coral"), (CornLoss(), "corn"), (ClmLoss(), "clm"),
                                       (RankedProbabilityLoss(), "clm"), (CrossEntropyLoss(), "clm"),
                                       (CrossEntropyLoss(), "linear")])
def test_fitting_heads_pass(loss, head):
    check_head(loss, ORDINAL, "ordinal_images", head)
    check_head(loss, Task("partial", 30, base_kind="ordinal"), "ordinal_images", head)


def test_head_loss_configs_set_the_models_head(compose_cfg):
    for name in ("coral", "corn", "clm"):
        cfg = compose_cfg([f"loss={name}"])
        assert cfg.model.head == name
        loss = instantiate(cfg.loss)
        assert loss.needs_head == name
    cfg = compose_cfg(["loss=rps", "model.head=clm", "model.head_link=cloglog"])
    assert cfg.model.head == "clm" and instantiate(cfg.model, input_shape=[1, 16, 16], num_classes=5).head.link == "cloglog"
    assert compose_cfg(["loss=ce"]).model.head == "linear"


# ---------------------------------------------------------------- the real CLI


@pytest.mark.slow
@pytest.mark.parametrize("loss,extra", [("coral", []), ("corn", []), ("clm", ["model.head_link=probit"]),
                                        ("rps", ["model.head=clm"])])
def test_head_losses_train_from_the_cli(tiny_train, loss, extra):
    proc, run = tiny_train(f"loss={loss}", "data=ordinal_images", *extra)
    metrics = json.loads((run / "metrics.json").read_text())
    for name in ("accuracy", "mae", "mae_expected", "rps", "qwk", "mmae", "ms", "ece", "mce", "rmsce", "nll"):
        assert np.isfinite(metrics[f"test/{name}"]), name
    pred = np.load(run / "predictions" / "test.npz")
    native = "cond_logits" if loss == "corn" else "cum_logits"
    assert pred[native].shape[1] == pred["logits"].shape[1] - 1
    np.testing.assert_allclose(np.exp(pred["logits"].astype(np.float64)).sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_a_head_that_does_not_fit_is_refused_by_the_cli(tmp_path, data_root):
    proc = run_cli("train", *TINY, f"paths.data_root={data_root}", f"hydra.run.dir={tmp_path / 'run'}",
                   "loss=coral", "model.head=linear")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("softloss: error:")]
    assert lines == ["softloss: error: loss=coral needs model.head=coral (got model.head=linear)"], proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_every_new_ordinal_loss_trains_on_an_image_folder_with_numeric_classes(tmp_path, data_root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(4):  # classes "0".."3": a count-like ordinal folder
        folder = tmp_path / "counts" / str(label)
        folder.mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 60, (16, 16), dtype=np.uint8) + np.uint8(50 * label)
            Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
    sweep = tmp_path / "sweep"
    losses = "coral,corn,clm,unimodal,wk,mce,mce_wk"
    proc = run_cli("train", "-m", "trainer.device=cpu", "trainer.precision=fp32", "trainer.progress=none",
                   "trainer.epochs=1", "data=image_folder", f"data.root={tmp_path / 'counts'}", "data.image_size=16",
                   "data.val_fraction=0.25", "data.test_fraction=0.25", "data.channels=1", "data.num_workers=0", "data.batch_size=8", "data.augment=false", "model=mlp",
                   f"paths.data_root={data_root}", f"hydra.sweep.dir={sweep}", f"loss={losses}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for job in range(len(losses.split(","))):
        metrics = json.loads((sweep / str(job) / "metrics.json").read_text())
        assert np.isfinite(metrics["test/accuracy"]) and np.isfinite(metrics["test/nll"]), job
        # numeric class folders are ordinal where data/image_folder.py reads them so (else
        # multiclass, in index order, with a warning): the ordinal metrics come with that kind
        if json.loads((sweep / str(job) / "task.json").read_text())["kind"] == "ordinal":
            assert np.isfinite(metrics["test/mae"]) and np.isfinite(metrics["test/mmae"]), job
