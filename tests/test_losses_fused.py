"""The fused paths of the losses (``losses/fused.py``) against the eager one.

Every shipped loss (and any registered loss without a config) runs forward + backward on each
fused path (its hand-written CPU kernel, ``losses/kernels.py``; its row function compiled by
``torch.compile``) and on the eager path, on the same inputs: random logits, extreme logits
(+-1e4) and float16/bfloat16 logits; values and gradients must agree. The float64 reference
tests of each family (test_losses_*.py) check the eager path; this file ties the others to it.
``gpu``-marked tests do the same on CUDA, where the compiled path is Triton's.

Which losses have a fused path is read from ``fused.counts`` (a tiny call per loss and path),
not written here: a loss whose row function gains a kernel is tested on it from then on, and a
loss on plain torch ops (``ce``, the ordinal heads...) is listed as such.
"""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from conftest import REPO

from softloss_cli.losses import fused, kernels

sys.path.insert(0, str(REPO / "benchmarks"))
import loss_cost  # noqa: E402

LOSSES = {k: v for k, v in loss_cost.loss_choices().items() if not isinstance(v, Exception)}
needs_compiler = pytest.mark.skipif(not fused.available(torch.device("cpu")), reason="no C++ compiler for inductor")
needs_kernels = pytest.mark.skipif(not kernels.available(), reason="the CPU kernels do not build here (no C++ compiler)")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def paths_taken(name: str, mode: str) -> set[str]:
    """The paths (``fused.PATHS``) one small forward + backward of loss ``name`` takes in ``mode``."""
    loss = LOSSES[name]
    logits, target, aux = loss_cost.make_inputs(loss, 4, 3, "cpu", torch.Generator().manual_seed(0))
    before = dict(fused.counts)
    with fused.mode_as(mode):
        loss(logits, target, **aux).backward()
    return {path for (_, path), n in fused.counts.items() if n > before.get((_, path), 0)}


# The row functions' eager form needs no compiler, so this list is the same everywhere.
ROW_LOSSES = sorted(name for name in LOSSES if paths_taken(name, "off"))
KERNEL_LOSSES = sorted(name for name in ROW_LOSSES if kernels.available() and "kernel" in paths_taken(name, "kernel"))


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


def _assert_same(loss, logits, target, aux, atol, rtol, mode="compile"):
    path = {"compile": "compiled", "kernel": "kernel"}[mode]
    before = sum(n for (_, p), n in fused.counts.items() if p == path)
    v_off, g_off = _run(loss, logits, target, aux, "off")
    v_on, g_on = _run(loss, logits, target, aux, mode)
    after = sum(n for (_, p), n in fused.counts.items() if p == path)
    assert after > before, f"the {path} path did not run"
    # (a head loss's own logits get no gradient: CORAL and CORN train their native outputs)
    assert [g is None for g in g_on] == [g is None for g in g_off]
    assert torch.isfinite(v_on) and all(torch.isfinite(g).all() for g in g_on if g is not None)
    torch.testing.assert_close(v_on, v_off, atol=atol, rtol=rtol)
    for a, b in zip(g_on, g_off):
        if a is not None:
            torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=rtol)


def _check_loss(name, device, mode="compile"):
    loss = LOSSES[name].to(device)
    # One shape for every case: one compilation per loss.
    logits, target, aux = _inputs(loss, 16, 9, device)
    _assert_same(loss, logits, target, aux, atol=2e-5, rtol=1e-4, mode=mode)
    # Extreme logits: +-1e4 in every row (a one-hot softmax, saturated sigmoids), plus some ties.
    extreme = logits.clone()
    extreme[:, 0] = 1e4
    extreme[::2, 1] = -1e4
    extreme[1::4, 2] = 1e4  # two classes at the top
    extreme[3] = -1e4
    ext_aux = {k: v.clamp(-1.0, 1.0) * 1e4 for k, v in aux.items()}
    _assert_same(loss, extreme, target, ext_aux, atol=1e-3, rtol=1e-4, mode=mode)
    # Half-precision logits (what a bf16/fp16 autocast model gives): the loss runs in float32.
    for dtype in (torch.float16, torch.bfloat16):
        _assert_same(loss, logits.to(dtype), target, {k: v.to(dtype) for k, v in aux.items()}, atol=1e-3, rtol=1e-3,
                     mode=mode)


@needs_compiler
@pytest.mark.parametrize("name", ROW_LOSSES)
def test_fused_matches_eager_on_cpu(name):
    _check_loss(name, torch.device("cpu"))


@needs_kernels
@pytest.mark.parametrize("name", KERNEL_LOSSES)
def test_kernel_matches_eager_on_cpu(name):
    _check_loss(name, torch.device("cpu"), mode="kernel")


def test_auto_mode_picks_the_kernel_then_the_compiled_path_where_each_pays():
    """'auto': a row function with a CPU kernel runs it (any size); one without compiles only on
    large CPU inputs and never when marked eager_on_cpu; 'off' never fuses, 'compile' always
    compiles, 'kernel' runs kernels only."""
    def plain_rows(z, want_grad=True):  # a row function with no kernel
        return z.sum(dim=1), None
    from softloss_cli.losses.ordinal import cdw_rows

    small = torch.zeros(8, 5)
    big = torch.zeros(fused.CPU_MIN_ELEMENTS // 8, 8)
    with fused.mode_as("auto"):
        expected = "kernel" if kernels.available() else "eager"
        assert fused.path_for(small, cdw_rows) == expected
        assert fused.path_for(small, plain_rows) == "eager"  # no kernel, too small to compile
        assert fused.path_for(big, plain_rows) == ("compiled" if fused.available(big.device) else "eager")
        fused.eager_on_cpu(plain_rows)
        try:
            assert fused.path_for(big, plain_rows) == "eager"  # as if measured faster eagerly on the CPU
        finally:
            fused._eager_cpu.discard(plain_rows)
    with fused.mode_as("off"):
        assert fused.path_for(big, cdw_rows) == "eager"
    with fused.mode_as("compile"):
        assert fused.path_for(small, cdw_rows) == "compiled"
    with fused.mode_as("kernel"):
        assert fused.path_for(small, cdw_rows) == "kernel"
        assert fused.path_for(big, plain_rows) == "eager"
    with pytest.raises(ValueError, match="fused mode must be one of auto, kernel, compile, off"):
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
    monkeypatch.setattr(fused, "_broken_kernels", {bce_rows: "not this test's path"})
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
    with fused.mode_as("compile"), pytest.raises(RuntimeError, match="no compiler here"):
        monkeypatch.setattr(fused, "_broken", {})
        fused.call(bce_rows, z, t)


def test_a_failing_kernel_falls_back_to_eager_with_one_warning(monkeypatch):
    """'auto': a kernel that fails leaves the loss working (eager) and says so once; 'kernel' raises."""
    from softloss_cli.losses.ordinal import cdf_rows

    def broken(*args, **kwargs):
        raise OSError("cannot load the library")

    monkeypatch.setitem(fused._kernels, cdf_rows, broken)
    monkeypatch.setattr(fused, "_broken_kernels", {})
    monkeypatch.setattr(kernels, "available", lambda: True)
    z, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    with fused.mode_as("auto"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = fused.call(cdf_rows, z, y, None)
        second = fused.call(cdf_rows, z, y, None)
    assert [str(w.message) for w in caught] == [
        "kernel loss path unavailable for cdf_rows (OSError: cannot load the library); using the eager one"]
    for out in (first, second):
        torch.testing.assert_close(out[0], cdf_rows(z, y, None)[0])
    monkeypatch.setattr(fused, "_broken_kernels", {})
    with fused.mode_as("kernel"), pytest.raises(OSError, match="cannot load the library"):
        fused.call(cdf_rows, z, y, None)


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


# ------------------------------------------------------- the kernels' options, row function by row function


def _rows_case(kind, b, c, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, c, generator=g) * 4
    z[0, :] = 0.0  # a uniform row
    z[1, 0] = 1e4  # a one-hot row: 1 - p_top underflows
    z[2, :] = -1e4
    z[2, -1] = 30.0
    z[3, 1] = 25.0  # a near-one-hot row that does not underflow
    labels = torch.randint(0, c, (b,), generator=g)
    labels[1] = 0
    labels[2] = c - 1
    multi = (torch.rand(b, c, generator=g) < 0.3).float()
    return z, labels, multi


def _kappa_tables(c):
    """(W, W transposed) of the quadratic kappa weights for c classes."""
    from softloss_cli.losses import kappa

    w = kappa.kappa_weights(c)
    return w, w.t().contiguous()


def _with_empty_rows(multi):
    """Multi-hot targets with rows 5 and 6 empty (no positive label)."""
    out = multi.clone()
    out[5:7] = 0.0
    return out


def _kl_table(c):
    """unimodal's (q, q log q, q sum) per class: binomial soft labels, whose far tail is 0."""
    from softloss_cli.losses.unimodal import UnimodalLoss

    return UnimodalLoss(family="binomial", eta=0.9)._cached(c, "cpu")


def _kl_per_row(labels, c):
    """SORD-like soft labels, one row per sample: q = softmax(-|k - y|), q log q, q sum."""
    q = torch.softmax(-(torch.arange(c)[None, :] - labels[:, None]).abs().float(), dim=1)
    return q, torch.special.xlogy(q, q).sum(dim=1), q.sum(dim=1)


def _kernel_cases():
    from softloss_cli.losses import average_k, kappa, multilabel, negative, ordinal, ordinal_heads

    gaps = torch.tensor([0.5, 1.0, 3.0, 0.25, 2.0, 1.5, 1.0, 4.0, 0.1, 2.0, 1.0, 1.0, 0.5])
    cases = []
    # C < 8: no whole 8 x 8 tile; 9, 14, 33: the transposed short-row kernels, last tile
    # overlapping; 150: past kShortRow and kShortSoftmaxRow (cpu_kernels.cpp), the row-by-row kernels.
    for c in (2, 9, 14, 33, 150):
        cases += [
            (f"cdf unit C={c}", ordinal.cdf_rows, lambda z, y, m: (z, y, None)),
            (f"cdw table C={c}", ordinal.cdw_rows,
             lambda z, y, m: (z, y, ordinal.ClassDistanceWeightedCELoss(alpha=2.0).weight_table(y, z.shape[1], "cpu"),
                              True)),
            (f"cdw rows C={c}", ordinal.cdw_rows,
             lambda z, y, m: (z, y, ordinal.ClassDistanceWeightedCELoss().weight_rows(y, z.shape[1], "cpu"), False)),
            (f"nl C={c}", negative.nl_rows, lambda z, y, m: (z, y, torch.arange(z.shape[0]) % 3 == 0, 0.7)),
            (f"two_head C={c}", average_k.two_head_ce_rows, lambda z, y, m: (z, y)),
            (f"epr mean C={c}", average_k.epr_batch, lambda z, y, m: (z, y, 2.0, 1.0, False)),
            (f"epr sum C={c}", average_k.epr_batch, lambda z, y, m: (z, y, 0.5, 3.0, True)),
            # CORAL (weighted) and CORN on K = C - 1 tasks; labels 0..K
            (f"coral C={c}", ordinal_heads.binary_rows,
             lambda z, y, m: (z[:, 1:].contiguous(), y, *ordinal_heads._task_tables(z.shape[1] - 1, "cpu", z.dtype, False),
                              torch.linspace(0.5, 2.0, z.shape[1] - 1))),
            (f"corn C={c}", ordinal_heads.binary_rows,
             lambda z, y, m: (z[:, 1:].contiguous(), y, *ordinal_heads._task_tables(z.shape[1] - 1, "cpu", z.dtype, True),
                              None)),
            (f"bce C={c}", multilabel.bce_rows, lambda z, y, m: (z, m)),
            (f"bce_one_hot C={c}", average_k.bce_one_hot_rows, lambda z, y, m: (z, y, 0.3, 0.5)),
            (f"ev_l1 C={c}", ordinal.ev_l1_rows, lambda z, y, m: (z, y, torch.arange(z.shape[1]).float(), 0.0)),
            (f"ev_l1_ce values C={c}", ordinal.ev_l1_rows,
             lambda z, y, m: (z, y, torch.linspace(-2.0, 5.0, z.shape[1]) ** 2, 0.5)),
            (f"softmax_ml C={c}", multilabel.softmax_ml_rows, lambda z, y, m: (z, _with_empty_rows(m), True)),
            (f"softmax_ml no uniform C={c}", multilabel.softmax_ml_rows, lambda z, y, m: (z, _with_empty_rows(m), False)),
            (f"kl table C={c}", ordinal.kl_rows, lambda z, y, m: (z, y, *_kl_table(z.shape[1]))),
            (f"kl rows C={c}", ordinal.kl_rows, lambda z, y, m: (z, None, *_kl_per_row(y, z.shape[1]))),
        ]
        cases += [
            (f"mce C={c}", kappa.mce_rows, lambda z, y, m: (z, y, None)),
            (f"mce weighted C={c}", kappa.mce_rows, lambda z, y, m: (z, y, torch.linspace(0.5, 2.0, z.shape[1]))),
            (f"wk C={c}", kappa.kappa_batch,
             lambda z, y, m: (z, y, *_kappa_tables(z.shape[1]), None, None, 1e-10, False)),
            (f"log wk + mce C={c}", kappa.kappa_batch,
             lambda z, y, m: (z, y, *_kappa_tables(z.shape[1]), torch.linspace(0.5, 2.0, z.shape[1]), 0.5, 1e-3, True)),
        ]
        for gamma in (0.0, 1.0, 2.0, 1.5):
            cases.append((f"focal g={gamma} C={c}", multilabel.focal_rows, lambda z, y, m, g=gamma: (z, m, g, 0.25, 0.75)))
        for gn, gp, clip, det in ((4.0, 0.0, 0.05, False), (4.0, 1.0, 0.0, False), (0.5, 0.0, 0.05, False),
                                  (0.0, 0.0, 0.05, False), (2.0, 1.0, 0.05, True), (1.0, 2.5, 0.2, False)):
            cases.append((f"asl gn={gn} gp={gp} clip={clip} detach={det} C={c}", multilabel.asl_rows,
                          lambda z, y, m, a=(gn, gp, clip, det): (z, m, *a)))
        # a soft target in row 3: multi-hot chunks take the one-logarithm path, this one's does not
        cases.append((f"asl soft target C={c}", multilabel.asl_rows,
                      lambda z, y, m: (z, torch.cat([m[:3], m[3:4] * 0.8 + 0.1, m[4:]]), 4.0, 0.0, 0.05, False)))
    cases.append(("cdf gaps C=14", ordinal.cdf_rows, lambda z, y, m: (z, y, gaps)))
    return cases


KERNEL_CASES = _kernel_cases() if kernels.available() else []


@needs_kernels
@pytest.mark.parametrize("case", KERNEL_CASES, ids=[c[0] for c in KERNEL_CASES])
def test_kernel_options_match_the_eager_row_function(case):
    """Every option a kernel takes (label-indexed or per-row weights, unequal CDF gaps, integer
    and fractional exponents, ASL's clip and detached weights), on uniform, one-hot and
    saturated rows, with and without the gradient, with 1 and 2 threads."""
    _, fn, make = case
    c = int(case[0].rsplit("C=", 1)[1])
    z, labels, multi = _rows_case(fn.__name__, 40, c, seed=c)
    args = make(z, labels, multi)
    # The reference: the eager row function in float64 (in float32 its separate sums can cancel:
    # focal's -7500 + 1e-4 - (-7500) on a saturated row, which the kernel sums entry by entry).
    wide = [a.double() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
    expected = [None if e is None else e.float() for e in fn(*wide)]
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            got = fused._kernels[fn](*args)
            no_grad = fused._kernels[fn](*args, want_grad=False)
        finally:
            torch.set_num_threads(1)
        assert len(got) == len(expected)
        want = expected
        if fn.__name__ == "two_head_ce_rows":
            # with the gradient, the kernel's `others` is the gradient: p_y - 1 (-0.0 where p_y
            # = 1) at each label, not -1; as far below every probability in the floats' order
            at_label = torch.zeros_like(z, dtype=torch.bool).scatter_(1, labels[:, None], True)
            assert got[2].data_ptr() == got[1].data_ptr()
            assert (torch.signbit(got[2][at_label])).all()
            torch.testing.assert_close(got[2][~at_label], expected[2][~at_label], atol=2e-5, rtol=2e-5)
            got, want = got[:2], expected[:2]
            torch.testing.assert_close(no_grad[2], fn(*wide)[2].float(), atol=2e-5, rtol=2e-5)
        for a, b in zip(got, want):
            if b is None:
                assert a is None
                continue
            assert torch.isfinite(a).all()
            torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)
        assert no_grad[1] is None
        torch.testing.assert_close(no_grad[0], expected[0], atol=2e-5, rtol=2e-5)


@needs_kernels
def test_kernels_refuse_labels_out_of_range_like_torch():
    from softloss_cli.losses.ordinal import RankedProbabilityLoss

    z = torch.randn(4, 5, requires_grad=True)
    with fused.mode_as("kernel"), pytest.raises(IndexError, match="target 5 is out of bounds for 5 classes"):
        RankedProbabilityLoss()(z, torch.tensor([0, 1, 5, 2]))
    with fused.mode_as("kernel"), pytest.raises(IndexError, match="target -1 is out of bounds for 5 classes"):
        RankedProbabilityLoss()(z, torch.tensor([0, 1, -1, 2]))


# multi-label losses read multi-hot targets, no label indices
LABELLED_KERNEL_LOSSES = [n for n in KERNEL_LOSSES if "multilabel" not in getattr(LOSSES[n], "task_kinds", ())]


@needs_kernels
@pytest.mark.parametrize("bad", [7, -1])
@pytest.mark.parametrize("name", LABELLED_KERNEL_LOSSES)
def test_every_kernel_refuses_a_label_out_of_range(name, bad):
    """A label out of range never reaches a kernel's row access: one error, no crash, no garbage."""
    loss = LOSSES[name]
    logits, target, aux = loss_cost.make_inputs(loss, 6, 5, "cpu", torch.Generator().manual_seed(0))
    target = target.clone()
    if target.ndim == 1:
        target[2] = bad
    else:  # partial targets (label, is_positive)
        target[2, 0] = bad
    with fused.mode_as("kernel"), pytest.raises((IndexError, ValueError), match="out of (bounds|range)"):
        loss(logits, target, **aux)


@needs_kernels
def test_the_kernel_split_over_threads_matches_one_thread():
    """Large inputs are split into row blocks on a thread pool: the same numbers as one call (to
    the last bits: an entry's lane in the vector loop, and so its rounding, moves with the block
    boundaries), and the same bits run to run."""
    from softloss_cli.losses.ordinal import cdf_rows

    z = torch.randn(3000, 101)
    y = torch.randint(0, 101, (3000,))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fused._kernels[cdf_rows](z, y, None)
        torch.set_num_threads(4)
        four = fused._kernels[cdf_rows](z, y, None)
        again = fused._kernels[cdf_rows](z, y, None)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(four[0], one[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(four[1], one[1], atol=1e-7, rtol=1e-6)
    assert torch.equal(four[0], again[0]) and torch.equal(four[1], again[1])


@needs_kernels
@pytest.mark.parametrize("c", [30, 41])
@pytest.mark.parametrize("threads", [1, 3])
def test_the_two_kappa_passes_hand_over_their_row_blocks_over_threads(c, threads):
    """kappa_stats leaves whole 16-row blocks of p in lanes for kappa_grad (C <= 40): with the
    rows split over threads at boundaries that are not multiples of 16 (B = 4099), each block
    still comes back in its rows, equal to the float64 eager function's."""
    from softloss_cli.losses import kappa

    g = torch.Generator().manual_seed(c)
    z, y = torch.randn(4099, c, generator=g) * 3, torch.randint(0, c, (4099,), generator=g)
    w, w_t = _kappa_tables(c)
    cw = torch.linspace(0.5, 2.0, c)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        assert kernels.threads_for(4099, c) == threads
        got = fused._kernels[kappa.kappa_batch](z, y, w, w_t, cw, 0.5, 1e-10, False)
        mce = fused._kernels[kappa.mce_rows](z, y, cw)
    finally:
        torch.set_num_threads(before)
    want = kappa.kappa_batch(z.double(), y, w.double(), w_t.double(), cw.double(), 0.5, 1e-10, False)
    torch.testing.assert_close(got[1], want[1].float(), atol=1e-8, rtol=1e-4)
    torch.testing.assert_close(got[0], want[0].float(), atol=1e-6, rtol=1e-5)
    want_mce = kappa.mce_rows(z.double(), y, cw.double())
    torch.testing.assert_close(mce[1], want_mce[1].float(), atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(mce[0], want_mce[0].float(), atol=1e-6, rtol=1e-5)


def test_without_a_compiler_auto_runs_eagerly_and_says_why(monkeypatch, tmp_path):
    """No C++ compiler: 'auto' takes the eager path (no warning: nothing failed), 'kernel' says
    why in one line."""
    from softloss_cli.losses.ordinal import cdf_rows

    monkeypatch.setattr(kernels, "_lib", None)
    monkeypatch.setattr(kernels, "_error", None)
    monkeypatch.setattr(kernels, "compiler", lambda: None)
    z = torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))
    with fused.mode_as("auto"):
        assert fused.path_for(z, cdf_rows) != "kernel"
    with fused.mode_as("kernel"), pytest.raises(kernels.KernelUnavailable, match="no C\\+\\+ compiler on the PATH"):
        fused.call(cdf_rows, z, y, None)


def test_the_build_is_cached_by_source_flags_and_cpu(monkeypatch, tmp_path):
    """One build per (source, flags, compiler, CPU): a second load reuses the file; a changed
    flag builds another."""
    if kernels.compiler() is None:
        pytest.skip("no C++ compiler")
    monkeypatch.setenv("SOFTLOSS_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "_lib", None)
    monkeypatch.setattr(kernels, "_error", None)
    kernels.library()
    built = sorted(tmp_path.glob("*.so"))
    assert len(built) == 1 and not list(tmp_path.glob(".*tmp"))
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(kernels, "_lib", None)
    kernels.library()
    assert built[0].stat().st_mtime_ns == stamp
    monkeypatch.setattr(kernels, "_lib", None)
    monkeypatch.setattr(kernels, "FLAGS", (*kernels.FLAGS, "-DSOFTLOSS_TEST_FLAG"))
    kernels.library()
    assert len(list(tmp_path.glob("*.so"))) == 2


@needs_kernels
@pytest.mark.parametrize("b,c,count", [(64, 30, 64), (512, 100, 512), (300, 1081, 300), (40, 5, 100), (3, 4, 9),
                                       (4096, 30, 4096), (4096, 30, 9000)])
def test_the_pseudo_label_kernel_picks_the_eager_entries(b, c, count):
    """Average-K's batch pseudo-labels: the same boundary and the same entries as the eager topk
    (which of the entries tied at the boundary are taken is the order's: the kernel takes them in
    index order, topk in its own), labels always set."""
    from softloss_cli.losses.average_k import batch_pseudo_labels

    g = torch.Generator().manual_seed(b)
    probs = torch.softmax(torch.randn(b, c, generator=g) * 2, dim=1)
    probs[0, :] = 1.0 / c  # ties
    if b < 4096:  # the benchmark's size keeps distinct values (the sampled selection, its radix select)
        probs = (probs * 64).round() / 64  # many ties at any boundary
    y = torch.randint(0, c, (b,), generator=g)
    others = probs.scatter(1, y[:, None], -1.0)
    want = batch_pseudo_labels(others, y, count)
    got = fused._kernels[batch_pseudo_labels](others, y, count)
    assert torch.equal(got[1], want[1])
    boundary = float(want[1])
    pseudo, expected = got[0], want[0]
    assert pseudo.sum() == expected.sum()
    assert torch.equal(pseudo[others != boundary], expected[others != boundary])
    assert (pseudo.gather(1, y[:, None]) == 1).all()
    tied = (others == boundary).nonzero()
    taken = pseudo[others == boundary]
    # the kernel's ties: the first ones in index order
    assert torch.equal(taken, torch.sort(taken, descending=True, stable=True).values)
    assert len(tied) == len(taken)


@needs_kernels
@pytest.mark.parametrize("b,c,count", [(64, 30, 64), (512, 100, 512), (300, 1081, 300), (40, 5, 100), (3, 4, 9)])
def test_the_pseudo_label_bce_kernel_matches_pseudo_labels_then_bce(b, c, count):
    """``pseudo_bce_rows``: the BCE of the second head on the pseudo-labels, read off the
    probabilities in the kernel, equals ``bce_rows`` on the labels the pseudo-label kernel writes
    (the same ties taken), with and without the gradient, on 1 and 2 threads."""
    from softloss_cli.losses.average_k import batch_pseudo_labels, pseudo_bce_rows
    from softloss_cli.losses.multilabel import bce_rows

    g = torch.Generator().manual_seed(c)
    probs = (torch.softmax(torch.randn(b, c, generator=g) * 2, dim=1) * 64).round() / 64  # many ties
    y = torch.randint(0, c, (b,), generator=g)
    others = probs.scatter(1, y[:, None], -1.0)
    a = torch.randn(b, c, generator=g) * 4
    pseudo, boundary = fused._kernels[batch_pseudo_labels](others, y, count)
    want_values, want_grad = bce_rows(a.double(), pseudo.double())
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            values, grad, got_boundary = fused._kernels[pseudo_bce_rows](a, others, y, count)
            no_grad = fused._kernels[pseudo_bce_rows](a, others, y, count, want_grad=False)
        finally:
            torch.set_num_threads(1)
        assert torch.equal(got_boundary, boundary)
        torch.testing.assert_close(values, want_values.float(), atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(grad, want_grad.float(), atol=2e-6, rtol=0)
        assert no_grad[1] is None
        torch.testing.assert_close(no_grad[0], want_values.float(), atol=2e-5, rtol=2e-5)
    # the gradient says which entries are positive: sigmoid(a) - t
    assert torch.equal((torch.sigmoid(a) - grad).round(), pseudo)


@needs_kernels
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_runs_threaded_kernels_after_the_parent_did():
    """The kernels' thread pool does not survive a fork: a child (a DataLoader worker, a forked
    sweep job) that runs a large loss builds its own pool instead of waiting forever on the
    parent's threads."""
    import multiprocessing as mp

    from softloss_cli.losses.ordinal import cdf_rows

    z, y = torch.randn(2048, 64), torch.randint(0, 64, (2048,))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = fused._kernels[cdf_rows](z, y, None)[0]  # starts the pool here
        ctx = mp.get_context("fork")
        with ctx.Pool(1) as pool:
            got = pool.apply_async(_child_cdf, (z, y)).get(timeout=60)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(got, expected)


def _child_cdf(z, y):
    from softloss_cli.losses.ordinal import cdf_rows

    torch.set_num_threads(2)
    return fused._kernels[cdf_rows](z, y, None)[0]
