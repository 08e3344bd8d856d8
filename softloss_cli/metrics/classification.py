"""General classification metrics: accuracy, top-k accuracy, NLL, Brier, ECE, confidence.

Pure functions over whole-split tensors; each returns a Python float (``reliability_bins``
returns tensors for plotting). Every public function follows the same small pipeline:
argument checks (``_check_*``, skipped with ``validate_args=False`` in hot loops), then a
vectorised computation in float64 where rounding matters (sums over thousands of samples).

Shared conventions:

- ``scores`` ``[N, C]``: any real-valued scores (logits or probabilities); only their
  order within a row is used. NaN is refused.
- ``probs`` ``[N, C]``: probabilities, finite, in [0, 1], each row summing to 1 within
  ``max(1e-3, eps(dtype))``. Sigmoid scores do not sum to 1: normalise the rows first
  (``classification_metrics`` does).
- ``targets`` ``[N]``: class indices in ``[0, C)``; int64 (other integer dtypes are
  accepted and cast; floating-point and bool targets are refused).
- The predicted class is ``torch.argmax`` over the row; on ties it is the *first*
  maximal index (lowest class index), as in ``numpy.argmax``.
- ``N >= 1`` and ``C >= 1``; empty inputs raise ``ValueError``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from softloss_cli.metrics import EvalOutputs, metric_group

__all__ = [
    "ReliabilityBins",
    "accuracy",
    "brier",
    "classification_metrics",
    "ece",
    "max_calibration_error",
    "mean_entropy",
    "mean_max_prob",
    "nll",
    "reliability_bins",
    "rms_calibration_error",
    "topk_accuracy",
]

TOPK_KS = (1, 2, 3, 5)


# --------------------------------------------------------------------------- validation


def check_matrix(x, name: str) -> None:
    """``x`` is a non-empty 2-D floating-point tensor without NaN."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, C], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    n, c = x.shape
    if n == 0:
        raise ValueError(f"{name} is empty: no samples (shape {tuple(x.shape)})")
    if c == 0:
        raise ValueError(f"{name} has no classes (shape {tuple(x.shape)})")
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN")


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` naming ``x`` when it holds +-inf."""
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite, got +-inf")


def check_probs(probs, name: str = "probs") -> None:
    """``probs`` is ``[N, C]``, finite, in [0, 1], rows summing to 1 within a dtype tolerance."""
    check_matrix(probs, name)
    check_finite(probs, name)
    lo, hi = probs.min().item(), probs.max().item()
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} must be probabilities in [0, 1], got values from {lo:.6g} to {hi:.6g}")
    tol = max(1e-3, torch.finfo(probs.dtype).eps)
    gap = (probs.to(torch.float64).sum(dim=1) - 1.0).abs().max().item()
    if gap > tol:
        raise ValueError(
            f"{name} rows must sum to 1 (max |row sum - 1| = {gap:.3g} > {tol:.3g}); "
            "normalise sigmoid scores by their row sums first"
        )


def check_targets(targets, n: int, c: int) -> None:
    """``targets`` is ``[n]`` integer class indices in ``[0, c)``."""
    if not isinstance(targets, torch.Tensor):
        raise ValueError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if targets.ndim != 1:
        raise ValueError(f"targets must be 1-D [N] class indices, got shape {tuple(targets.shape)}")
    if targets.dtype == torch.bool or targets.is_floating_point() or targets.is_complex():
        raise ValueError(
            f"targets must be an integer tensor of class indices (int64), got dtype {targets.dtype}"
        )
    if targets.shape[0] != n:
        raise ValueError(f"shape mismatch: {n} rows of scores but {targets.shape[0]} targets")
    lo, hi = targets.min().item(), targets.max().item()
    if lo < 0 or hi >= c:
        raise ValueError(
            f"targets must be class indices in [0, {c - 1}] for C={c}, got values from {lo} to {hi}"
        )


def _check_k(k, c: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an int, got {type(k).__name__}")
    if not 1 <= k <= c:
        raise ValueError(f"k must be in [1, C] = [1, {c}], got {k}")


def _check_n_bins(n_bins) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int):
        raise ValueError(f"n_bins must be an int, got {type(n_bins).__name__}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")


def _f64(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.float64)


# --------------------------------------------------------------------------- metrics


def accuracy(scores: torch.Tensor, targets: torch.Tensor, *, validate_args: bool = True) -> float:
    """Top-1 accuracy: ``(1/N) sum_i 1[argmax_c s_ic = y_i]``.

    Args:
        scores: ``[N, C]`` real scores (logits or probabilities; only the order counts).
        targets: ``[N]`` int64 class indices.
        validate_args: check shapes, dtypes and ranges first.

    Ties: the predicted class is ``torch.argmax``'s first maximal index, so a sample whose
    true class ties with a lower-indexed class counts as wrong; ``topk_accuracy(k=1)`` uses
    the same rule and always equals this.

    Returns the mean over samples, a float in [0, 1].
    """
    if validate_args:
        check_matrix(scores, "scores")
        check_targets(targets, *scores.shape)
    pred = scores.detach().argmax(dim=1)
    return (pred == targets.to(pred.device, torch.int64)).to(torch.float64).mean().item()


def topk_accuracy(
    scores: torch.Tensor, targets: torch.Tensor, k: int, *, validate_args: bool = True
) -> float:
    """Top-k accuracy: share of samples whose true class is among the k highest scores.

    ``(1/N) sum_i 1[ #{c : s_ic > s_iy} + #{c < y_i : s_ic = s_iy} < k ]``

    Args:
        scores: ``[N, C]`` real scores (logits or probabilities).
        targets: ``[N]`` int64 class indices.
        k: number of guesses, an int in ``[1, C]`` (``k = C`` always gives 1.0).
        validate_args: check shapes, dtypes, ranges and ``k`` first.

    Ties (our choice): broken by class index, the lower index ranking first, as ``argmax``
    does, so ``k = 1`` equals ``accuracy`` and a collapsed model (all scores equal) gets
    ``k / C`` on balanced data, not 1.0. The true class's rank is counted directly (one
    comparison pass over ``[N, C]``, no sort). With no ties this equals scikit-learn's
    ``top_k_accuracy_score``.

    Returns the mean over samples, a float in [0, 1].
    """
    if validate_args:
        check_matrix(scores, "scores")
        check_targets(targets, *scores.shape)
        _check_k(k, scores.shape[1])
    s = scores.detach()
    y = targets.to(s.device, torch.int64)
    true_score = s.gather(1, y[:, None])
    before = torch.arange(s.shape[1], device=s.device)[None, :] < y[:, None]
    rank = ((s > true_score) | ((s == true_score) & before)).sum(dim=1)
    return (rank < k).to(torch.float64).mean().item()


def nll(logits: torch.Tensor, targets: torch.Tensor, *, validate_args: bool = True) -> float:
    """Mean negative log-likelihood of the true class under ``softmax(logits)``.

    ``(1/N) sum_i -log_softmax(z_i)_{y_i} = (1/N) sum_i (logsumexp_c z_ic - z_iy_i)``

    Computed from the logits in float64 (``log_softmax``), never as ``log`` of rounded
    probabilities, so it stays finite for logits of any finite size (``[1e4, -1e4]`` with
    the second class true gives exactly 2e4).

    Args:
        logits: ``[N, C]`` finite logits.
        targets: ``[N]`` int64 class indices.
        validate_args: check shapes, dtypes, finiteness and ranges first.

    Returns the mean over samples in nats, a float >= 0 (0 when ``C = 1``).
    """
    if validate_args:
        check_matrix(logits, "logits")
        check_finite(logits, "logits")
        check_targets(targets, *logits.shape)
    z = _f64(logits)
    y = targets.to(z.device, torch.int64)
    logp_true = torch.log_softmax(z, dim=1).gather(1, y[:, None])
    return (-logp_true).mean().item()


def brier(probs: torch.Tensor, targets: torch.Tensor, *, validate_args: bool = True) -> float:
    """Multiclass Brier score: ``(1/N) sum_i sum_c (p_ic - 1[c = y_i])^2``.

    The original (Brier 1950) multiclass form: summed over classes, averaged over samples;
    range [0, 2] (0: all mass on the true class; 2: all mass on one wrong class). It is
    *not* divided by C (scikit-learn's binary ``brier_score_loss`` is the one-column case).

    Args:
        probs: ``[N, C]`` probabilities, rows summing to 1.
        targets: ``[N]`` int64 class indices.
        validate_args: check shapes, dtypes, ranges and row sums first.

    Computed in float64. Returns a float in [0, 2].
    """
    if validate_args:
        check_probs(probs)
        check_targets(targets, *probs.shape)
    diff = _f64(probs).clone()
    y = targets.to(diff.device, torch.int64)
    diff[torch.arange(diff.shape[0], device=diff.device), y] -= 1.0
    return diff.square().sum(dim=1).mean().item()


class ReliabilityBins(NamedTuple):
    """Per-bin statistics of a reliability diagram (``n_bins`` entries each).

    confidence: mean max-probability in the bin (float64; NaN for an empty bin);
    accuracy: share of correct argmax predictions in the bin (float64; NaN when empty);
    count: samples in the bin (int64). Bin ``b`` (0-based) covers ``(b/M, (b+1)/M]``,
    the first bin also includes 0.
    """

    confidence: torch.Tensor
    accuracy: torch.Tensor
    count: torch.Tensor


def _binning(probs: torch.Tensor, targets: torch.Tensor, n_bins: int):
    """Per-bin sums of confidence and correctness and the counts (vectorised, float64)."""
    p = _f64(probs)
    conf, pred = p.max(dim=1)  # first maximal index on ties, as torch.argmax
    correct = (pred == targets.to(p.device, torch.int64)).to(torch.float64)
    # Edges m / M (exact quotients). bucketize(right=False) on the inner edges gives
    # bin b for b/M < conf <= (b+1)/M: right edge inclusive, conf = 0 in bin 0, conf = 1 in bin M-1.
    inner = torch.arange(1, n_bins, dtype=torch.float64, device=p.device) / n_bins
    idx = torch.bucketize(conf, inner, right=False)
    count = torch.bincount(idx, minlength=n_bins)
    conf_sum = torch.zeros(n_bins, dtype=torch.float64, device=p.device).scatter_add_(0, idx, conf)
    correct_sum = torch.zeros(n_bins, dtype=torch.float64, device=p.device).scatter_add_(0, idx, correct)
    return conf_sum, correct_sum, count


def _checked_binning(probs: torch.Tensor, targets: torch.Tensor, n_bins: int, validate_args: bool):
    """``_binning`` after the checks every binned calibration metric makes (``validate_args``):
    ``n_bins``, probabilities rows, targets."""
    if validate_args:
        _check_n_bins(n_bins)
        check_probs(probs)
        check_targets(targets, *probs.shape)
    return _binning(probs, targets, n_bins)


def reliability_bins(
    probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 15, *, validate_args: bool = True
) -> ReliabilityBins:
    """Reliability-diagram bins over the max probability (see ``ece`` for the binning).

    Args:
        probs: ``[N, C]`` probabilities, rows summing to 1.
        targets: ``[N]`` int64 class indices.
        n_bins: M equal-width bins on [0, 1] (default 15); bin ``b`` covers ``(b/M, (b+1)/M]``
            with 0 included in the first bin.
        validate_args: check shapes, dtypes, ranges and row sums first.

    Returns ``ReliabilityBins(confidence, accuracy, count)``, each ``[M]``: per-bin mean
    confidence and accuracy (float64, NaN where the bin is empty) and the sample counts
    (int64, summing to N). The bin edges are ``torch.arange(M + 1) / M``.
    """
    conf_sum, correct_sum, count = _checked_binning(probs, targets, n_bins, validate_args)
    denom = count.to(torch.float64)  # 0 / 0 = NaN marks an empty bin
    return ReliabilityBins(conf_sum / denom, correct_sum / denom, count)


def ece(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 15, *, validate_args: bool = True) -> float:
    """Expected calibration error of the top-1 prediction (Guo et al. 2017, arXiv:1706.04599).

    ``ECE = sum_{b=1}^{M} (|B_b| / N) * |acc(B_b) - conf(B_b)|``

    where ``conf_i = max_c p_ic`` and ``yhat_i = argmax_c p_ic`` (first maximal index on
    ties), ``B_b = {i : conf_i in I_b}`` with M equal-width bins ``I_b = ((b-1)/M, b/M]``
    (right edge inclusive; the first bin is ``[0, 1/M]``), ``acc(B) = mean_{i in B}
    1[yhat_i = y_i]`` and ``conf(B) = mean_{i in B} conf_i``. Empty bins contribute 0.
    Since ``|B| * acc(B) = sum of correct`` this is computed as
    ``(1/N) sum_b |sum_{i in B_b} (1[yhat_i = y_i] - conf_i)|``, binned with ``bucketize`` +
    ``scatter_add`` in float64.

    Confidences are binned by their exact value after the cast to float64: float32 ``0.4``
    is ``0.40000000596...`` and falls in ``(0.4, 0.5]``, not ``(0.3, 0.4]``.

    Note torchmetrics puts ``conf = 1`` in an extra bin and uses left-inclusive edges, so
    values can differ slightly from its ``calibration_error`` when confidences hit an edge.

    Args:
        probs: ``[N, C]`` probabilities, rows summing to 1.
        targets: ``[N]`` int64 class indices.
        n_bins: M, an int >= 1 (default 15).
        validate_args: check shapes, dtypes, ranges and row sums first.

    Returns a float in [0, 1].
    """
    conf_sum, correct_sum, _ = _checked_binning(probs, targets, n_bins, validate_args)
    return ((correct_sum - conf_sum).abs().sum() / probs.shape[0]).item()


def max_calibration_error(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 15, *,
                          validate_args: bool = True) -> float:
    """Maximum calibration error (Naeini et al., AAAI 2015; torchmetrics' ``norm='max'``).

    ``MCE = max_{b : |B_b| > 0} |acc(B_b) - conf(B_b)|``

    over the same M equal-width bins of the top-1 confidence as ``ece`` (empty bins are
    skipped). The worst bin counts whatever its size, so a handful of samples in a sparse bin
    can set it: read it with the reliability diagram.

    Args:
        probs: ``[N, C]`` probabilities, rows summing to 1.
        targets: ``[N]`` int64 class indices.
        n_bins: M, an int >= 1 (default 15).
        validate_args: check shapes, dtypes, ranges and row sums first.

    Returns a float in [0, 1].
    """
    conf_sum, correct_sum, count = _checked_binning(probs, targets, n_bins, validate_args)
    gaps = (correct_sum - conf_sum).abs() / count.clamp_min(1).to(torch.float64)
    return gaps.max().item()  # an empty bin has gap 0, never the maximum of a non-empty split


def rms_calibration_error(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 15, *,
                          validate_args: bool = True) -> float:
    """Root-mean-square calibration error (torchmetrics' ``norm='l2'``, Hendrycks et al. 2019).

    ``RMSCE = sqrt( sum_b (|B_b| / N) * (acc(B_b) - conf(B_b))^2 )``

    over the bins of ``ece``; between ECE and MCE in how much a large gap in one bin weighs
    (``ECE <= RMSCE <= MCE``).

    Args:
        probs: ``[N, C]`` probabilities, rows summing to 1.
        targets: ``[N]`` int64 class indices.
        n_bins: M, an int >= 1 (default 15).
        validate_args: check shapes, dtypes, ranges and row sums first.

    Returns a float in [0, 1].
    """
    conf_sum, correct_sum, count = _checked_binning(probs, targets, n_bins, validate_args)
    sq = (correct_sum - conf_sum).square() / count.clamp_min(1).to(torch.float64)  # n_b * gap_b^2
    return (sq.sum() / probs.shape[0]).sqrt().item()


def mean_max_prob(probs: torch.Tensor, *, validate_args: bool = True) -> float:
    """Mean confidence: ``(1/N) sum_i max_c p_ic``, in float64.

    Args:
        probs: ``[N, C]`` probabilities, rows summing to 1.
        validate_args: check shape, dtype, range and row sums first.

    Returns a float in [1/C, 1].
    """
    if validate_args:
        check_probs(probs)
    return _f64(probs).amax(dim=1).mean().item()


def mean_entropy(probs: torch.Tensor, *, validate_args: bool = True) -> float:
    """Mean predictive entropy in nats: ``(1/N) sum_i -sum_c p_ic log p_ic``.

    Uses ``0 log 0 = 0`` (``torch.special.xlogy``), so exact zeros give a finite result
    (a one-hot row has entropy 0, never NaN). Computed in float64.

    Args:
        probs: ``[N, C]`` probabilities, rows summing to 1.
        validate_args: check shape, dtype, range and row sums first.

    Returns a float in [0, log C].
    """
    if validate_args:
        check_probs(probs)
    p = _f64(probs)
    return (-torch.special.xlogy(p, p).sum(dim=1)).mean().item()


# --------------------------------------------------------------------------- metric group


def normalise_rows(scores: torch.Tensor) -> torch.Tensor:
    """Rows divided by their sums, in float64; a row summing to 0 becomes uniform."""
    s = _f64(scores)
    total = s.sum(dim=1, keepdim=True)
    uniform = torch.full_like(s, 1.0 / s.shape[1])
    return torch.where(total > 0, s / total.clamp_min(torch.finfo(torch.float64).tiny), uniform)


@metric_group("multiclass", "ordinal")
def classification_metrics(
    outputs: EvalOutputs, task, reference: EvalOutputs | None = None
) -> dict[str, float]:
    """The general metrics of every single-label split (multiclass, ordinal, partial's base kind).

    Returns ``accuracy``, ``nll``, ``brier``, ``ece``, ``mce`` and ``rmsce`` (15 bins), ``mean_max_prob``,
    ``mean_entropy`` and ``topk_acc_k{K}`` for K in (1, 2, 3, 5) where ``K < C`` (``K = C``
    would always be 1.0; ``topk_acc_k1`` equals ``accuracy`` and is written so that the
    Average-K tables can set ``avgk_acc_k{K}`` beside ``topk_acc_k{K}`` for every K).

    Probability metrics (brier, ece, mce, rmsce, mean_max_prob, mean_entropy) use ``outputs.scores``
    with every row divided by its sum (in float64): a no-op up to rounding for softmax
    losses, and a normalisation of sigmoid scores, which need not sum to 1, for
    sigmoid-trained models used on a single-label task (a row of all zeros becomes
    uniform). ``accuracy`` and top-k use the raw scores (the order is the same).
    ``nll`` uses ``outputs.logits``: ``-log softmax(logits)_y``; for a sigmoid-trained
    model that is the softmax of its logits, not the normalised sigmoid probabilities.
    ``reference`` is not used.
    """
    scores, logits, targets = outputs.scores, outputs.logits, outputs.targets
    check_matrix(scores, "scores")
    check_finite(scores, "scores")
    if scores.min().item() < 0.0:
        raise ValueError("scores must be non-negative probabilities (softmax or sigmoid outputs)")
    check_matrix(logits, "logits")
    check_finite(logits, "logits")
    if logits.shape != scores.shape:
        raise ValueError(f"shape mismatch: logits {tuple(logits.shape)} vs scores {tuple(scores.shape)}")
    n, c = scores.shape
    if c != task.num_classes:
        raise ValueError(f"scores have {c} columns but the task has {task.num_classes} classes")
    check_targets(targets, n, c)

    probs = normalise_rows(scores)
    fast = {"validate_args": False}
    result = {
        "accuracy": accuracy(scores, targets, **fast),
        "nll": nll(logits, targets, **fast),
        "brier": brier(probs, targets, **fast),
        "ece": ece(probs, targets, 15, **fast),
        "mce": max_calibration_error(probs, targets, 15, **fast),
        "rmsce": rms_calibration_error(probs, targets, 15, **fast),
        "mean_max_prob": mean_max_prob(probs, **fast),
        "mean_entropy": mean_entropy(probs, **fast),
    }
    for k in TOPK_KS:
        if k < c:
            result[f"topk_acc_k{k}"] = topk_accuracy(scores, targets, k, **fast)
    return result
