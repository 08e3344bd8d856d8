"""The fused path of the losses (``losses/fused.py``) against the eager one.

Every shipped loss (and any registered loss without a config) runs forward + backward with the
fused path forced on (its row function compiled by ``torch.compile``) and forced off, on the
same inputs: random logits, extreme logits (+-1e4) and float16/bfloat16 logits; values and
gradients must agree. The float64 reference tests of each family (test_losses_*.py) check the
eager path; this file ties the compiled one to it. ``gpu``-marked tests do the same on CUDA,
where the compiled path is Triton's.
"""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from conftest import REPO

from softloss_cli.losses import fused

sys.path.insert(0, str(REPO / "benchmarks"))
import loss_cost  # noqa: E402

LOSSES = {k: v for k, v in loss_cost.loss_choices().items() if not isinstance(v, Exception)}
# Losses with a closed-form row function (the others are one fused torch call already).
# Losses with no row function on the fused path: plain torch ops (ce, epr, negated_ce,
# positives_only) or closed-form gradients computed eagerly (the ordinal heads' and kappa losses).
PLAIN = {"ce", "epr", "negated_ce", "positives_only", "coral", "corn", "clm", "unimodal", "wk", "mce", "mce_wk"}
ROW_LOSSES = sorted(set(LOSSES) - PLAIN)
needs_compiler = pytest.mark.skipif(not fused.available(torch.device("cpu")), reason="no C++ compiler for inductor")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _inputs(loss, b, c, device, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits, target, aux = loss_cost.make_inputs(loss, b, c, "cpu", g)
    logits = (logits.detach() * (scale / 3.0)).to(device)
    aux = {k: (v.detach() * (scale / 3.0)).to(device) for k, v in aux.items()}
    return logits, target.to(device), aux


def _run(loss, logits, target, aux, mode):
    """(value, gradients of the logits and aux logits) with the fused path ``mode``."""
    z = logits.clone().requires_grad_()
    a = {k: v.clone().requires_grad_() for k, v in aux.items()}
    with fused.mode_as(mode):
        value = loss(z, target, **a)
        value.backward()
    return value.detach(), [z.grad] + [v.grad for v in a.values()]


def _assert_same(loss, logits, target, aux, atol, rtol):
    before = sum(n for (_, path), n in fused.counts.items() if path == "fused")
    v_off, g_off = _run(loss, logits, target, aux, "off")
    v_on, g_on = _run(loss, logits, target, aux, "on")
    after = sum(n for (_, path), n in fused.counts.items() if path == "fused")
    assert after > before, "the fused path did not run"
    assert torch.isfinite(v_on) and all(torch.isfinite(g).all() for g in g_on)
    torch.testing.assert_close(v_on, v_off, atol=atol, rtol=rtol)
    for a, b in zip(g_on, g_off):
        torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=rtol)


def _check_loss(name, device):
    loss = LOSSES[name].to(device)
    # One shape for every case: one compilation per loss.
    logits, target, aux = _inputs(loss, 16, 9, device)
    _assert_same(loss, logits, target, aux, atol=2e-5, rtol=1e-4)
    # Extreme logits: +-1e4 in every row (a one-hot softmax, saturated sigmoids), plus some ties.
    extreme = logits.clone()
    extreme[:, 0] = 1e4
    extreme[::2, 1] = -1e4
    extreme[1::4, 2] = 1e4  # two classes at the top
    extreme[3] = -1e4
    ext_aux = {k: v.clamp(-1.0, 1.0) * 1e4 for k, v in aux.items()}
    _assert_same(loss, extreme, target, ext_aux, atol=1e-3, rtol=1e-4)
    # Half-precision logits (what a bf16/fp16 autocast model gives): the loss runs in float32.
    for dtype in (torch.float16, torch.bfloat16):
        _assert_same(loss, logits.to(dtype), target, {k: v.to(dtype) for k, v in aux.items()}, atol=1e-3, rtol=1e-3)


@needs_compiler
@pytest.mark.parametrize("name", ROW_LOSSES)
def test_fused_matches_eager_on_cpu(name):
    _check_loss(name, torch.device("cpu"))


def test_auto_mode_keeps_small_inputs_and_compiling_callers_eager():
    """'auto' fuses only where it pays: small CPU inputs stay eager (no compile), so do row
    functions marked eager_on_cpu; 'off' never fuses, 'on' always does."""
    from softloss_cli.losses.negative import nl_rows
    from softloss_cli.losses.ordinal import cdw_rows

    small = torch.zeros(8, 5)
    big = torch.zeros(fused.CPU_MIN_ELEMENTS // 8, 8)
    with fused.mode_as("auto"):
        assert not fused.wants_fused(small, cdw_rows)
        assert fused.wants_fused(big, cdw_rows) == fused.available(big.device)
        assert not fused.wants_fused(big, nl_rows)  # measured faster eagerly on the CPU
    with fused.mode_as("off"):
        assert not fused.wants_fused(big, cdw_rows)
    with fused.mode_as("on"):
        assert fused.wants_fused(small, nl_rows)
    with pytest.raises(ValueError, match="fused mode must be one of auto, on, off"):
        fused.set_mode("sometimes")


def test_a_failing_compile_falls_back_to_eager_with_one_warning(monkeypatch):
    """'auto': a compiler that fails leaves the loss working (eager) and says so once."""
    from softloss_cli.losses.multilabel import bce_rows

    def broken(fn):
        def call(*args, **kwargs):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(fused, "_compiled", {bce_rows: broken(bce_rows)})
    monkeypatch.setattr(fused, "_broken", {})
    monkeypatch.setattr(fused, "_available", {"cpu": True})
    z = torch.randn(fused.CPU_MIN_ELEMENTS // 8, 8)
    t = (torch.rand_like(z) < 0.3).float()
    with fused.mode_as("auto"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = fused.call(bce_rows, z, t)
        second = fused.call(bce_rows, z, t)
    assert [str(w.message) for w in caught] == [
        "fused loss path unavailable for bce_rows (RuntimeError: no compiler here); using the eager one"]
    expected = bce_rows(z, t)
    for out in (first, second):
        torch.testing.assert_close(out[0], expected[0])
    with fused.mode_as("on"), pytest.raises(RuntimeError, match="no compiler here"):
        monkeypatch.setattr(fused, "_broken", {})
        fused.call(bce_rows, z, t)


# --------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", ROW_LOSSES)
def test_fused_matches_eager_on_cuda(name):
    _check_loss(name, torch.device("cuda"))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", ROW_LOSSES)
def test_fused_matches_eager_on_cuda_at_benchmark_size(name):
    """B = 4096, C = 1081 (the benchmark's largest case): the Triton kernels' reductions over
    long rows agree with the eager ones."""
    loss = LOSSES[name].to("cuda")
    logits, target, aux = _inputs(loss, 4096, 1081, torch.device("cuda"), seed=1)
    _assert_same(loss, logits, target, aux, atol=5e-5, rtol=1e-3)
    with fused.mode_as("auto"):
        assert fused.wants_fused(logits)
