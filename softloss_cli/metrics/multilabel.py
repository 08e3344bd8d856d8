"""Multi-label metrics: mAP, F1 at a threshold, exact match, false positives on empty images.

Pure functions over whole-split tensors (argument checks first, skipped with
``validate_args=False``; float64 where sums run over thousands of entries).

Shared conventions:

- ``scores`` ``[N, C]``: real-valued scores; ranking metrics (``average_precision``,
  ``mean_average_precision``) use only their order within each column, so logits work.
- ``probs`` ``[N, C]``: probabilities in [0, 1] (sigmoid or softmax outputs; rows need not
  sum to 1); the threshold metrics mark category c active for sample i when
  ``probs_ic >= threshold`` (default 0.5). A softmax is thresholded the same way, which
  is the point of the presence scenario: it cannot make two categories active at 0.5 at
  once, nor say "none" without spreading its mass.
- ``targets`` ``[N, C]``: binary multi-hot (float, integer or bool; values 0 or 1).
"""

from __future__ import annotations

import torch

from softloss_cli.metrics import EvalOutputs, metric_group

__all__ = [
    "average_precision",
    "empty_fpr",
    "exact_match",
    "f1_macro",
    "f1_micro",
    "mean_active",
    "mean_average_precision",
    "multilabel_metrics",
    "ranking_scores",
]

THRESHOLD = 0.5
_BLOCK_ELEMENTS = 1 << 21  # average_precision works on blocks of whole columns of about this many scores


# --------------------------------------------------------------------------- validation


def _check_scores(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, C], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if torch.aminmax(x.detach()).min.isnan():  # one pass, no N x C mask; NaN propagates to min
        raise ValueError(f"{name} contains NaN")


def _check_probs(probs, name: str = "probs") -> None:
    _check_scores(probs, name)
    lo, hi = probs.min().item(), probs.max().item()
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} must be probabilities in [0, 1], got values from {lo:.6g} to {hi:.6g}")


def _check_targets(targets, shape: tuple[int, int]) -> None:
    if not isinstance(targets, torch.Tensor):
        raise ValueError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if tuple(targets.shape) != tuple(shape):
        raise ValueError(f"targets must be multi-hot [N, C] = {list(shape)}, got shape {tuple(targets.shape)}")
    t = targets.detach()
    if t.dtype == torch.bool:
        return
    binary = t == 0
    binary |= t == 1  # in place: two N x C masks at most
    if not binary.all():
        raise ValueError("targets must be binary multi-hot (0 or 1 in every entry)")


def _check_threshold(threshold) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")


def _binary(targets: torch.Tensor) -> torch.Tensor:
    return targets.detach().to(torch.bool)


# --------------------------------------------------------------------------- ranking


def average_precision(scores: torch.Tensor, targets: torch.Tensor, *, validate_args: bool = True) -> torch.Tensor:
    """Average precision of every category (column), as scikit-learn's ``average_precision_score``.

    ``AP_c = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds of column c in
    decreasing order, where ``P_n``/``R_n`` are the precision/recall of predicting
    "positive" for every sample scoring at least the n-th threshold. Tied scores enter
    together (one threshold), exactly as scikit-learn does. Only the positives' thresholds
    add recall, so ``AP_c = (1 / #pos) sum over positives v of #{positives >= v} / #{all >= v}``.

    No sort of the N scores: per column, the positives are sorted (a few percent of N
    in practice) and every score is binary-searched among them (``torch.searchsorted``);
    a histogram of the results, summed from the top, gives ``#{all >= v}``. Vectorised
    over blocks of columns (``_average_precision_block``, about ``_BLOCK_ELEMENTS``
    scores each), so the extra memory is a few times one block, not of the whole matrix.

    Args:
        scores: ``[N, C]`` real scores (only the order within a column matters).
        targets: ``[N, C]`` binary multi-hot.
        validate_args: check shapes, dtypes and values first.

    Returns float64 ``[C]``: the AP of each category; NaN for a category with no positive
    (undefined; scikit-learn warns and returns 0 there, see ``mean_average_precision``).
    """
    if validate_args:
        _check_scores(scores, "scores")
        _check_targets(targets, scores.shape)
    n, c = scores.shape
    s, t = scores.detach(), targets.detach()
    width = max(1, _BLOCK_ELEMENTS // n)
    # Blocks of whole columns, not samples: a handful of iterations.
    return torch.cat([_average_precision_block(s[:, j : j + width].T, t[:, j : j + width].T)
                      for j in range(0, c, width)])


def _average_precision_block(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """AP of each row of ``s`` ``[B, N]`` (one category a row) against ``t`` ``[B, N]`` (0/1)."""
    b, n = s.shape
    dtype = s.dtype if s.dtype in (torch.float32, torch.float64) else torch.float32  # exact for half types
    s = s.to(dtype).contiguous()
    y = t.to(torch.bool)
    npos = y.sum(dim=1)  # int64 [B]
    width = max(1, int(npos.max()))
    # The positives' scores of each row, sorted increasing, padded with +inf to one width.
    rows, cols = y.nonzero(as_tuple=True)  # row-major: grouped by row
    slot = torch.arange(len(rows), device=s.device) - (npos.cumsum(0) - npos)[rows]
    pos = torch.full((b, width), torch.inf, dtype=dtype, device=s.device)
    pos[rows, slot] = s[rows, cols]
    pos = pos.sort(dim=1).values
    del rows, cols, slot, y
    # bucket(u) = #{j : pos_j <= u}; a score u is >= pos_j exactly when bucket(u) > j. The
    # +inf padding sorts after every real positive and changes no count for j < #pos.
    bucket = torch.searchsorted(pos, s, right=True)  # int64 [B, N], in [0, width]
    bucket += (torch.arange(b, device=s.device) * (width + 1))[:, None]
    hist = torch.bincount(bucket.reshape(-1), minlength=b * (width + 1)).view(b, width + 1)
    del bucket
    at_least = hist.flip(1).cumsum(dim=1).flip(1)[:, 1:]  # [B, width]: #{all scores >= pos_j}
    true_pos = npos[:, None] - torch.searchsorted(pos, pos, right=False)  # #{positives >= pos_j}
    real = torch.arange(width, device=s.device)[None, :] < npos[:, None]
    precision = torch.where(real, true_pos.to(torch.float64) / at_least.clamp_min(1).to(torch.float64), 0.0)
    ap = precision.sum(dim=1) / npos.to(torch.float64)
    return torch.where(npos > 0, ap, torch.full_like(ap, float("nan")))


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor, *, validate_args: bool = True) -> float:
    """mAP: the mean of ``average_precision`` over categories with at least one positive.

    Categories without positives are left out (their AP is undefined), unlike
    ``sklearn.metrics.average_precision_score(average='macro')``, which scores them 0.
    Raises ValueError when no category has a positive.
    """
    ap = average_precision(scores, targets, validate_args=validate_args)
    defined = ~torch.isnan(ap)
    if not defined.any():
        raise ValueError("mAP is undefined: no category has a positive sample")
    return ap[defined].mean().item()


def ranking_scores(outputs: EvalOutputs) -> torch.Tensor:
    """Scores whose order equals the order of ``outputs.scores``, without float32 saturation.

    ``sigmoid`` rounds to exactly 1.0 for logits above ~17 in float32, which would tie
    confident positives; the logits themselves keep their order. For a softmax,
    ``log_softmax`` plays the same role (monotone in the probability, never 0 or 1).
    """
    if outputs.info.get("activation") == "sigmoid":
        return outputs.logits
    return torch.log_softmax(outputs.logits.to(torch.float32), dim=1)


# --------------------------------------------------------------------------- thresholded


def _confusion(probs, targets, threshold, validate_args):
    if validate_args:
        _check_threshold(threshold)
        _check_probs(probs)
        _check_targets(targets, probs.shape)
    pred = probs.detach() >= threshold
    truth = _binary(targets)
    tp = (pred & truth).sum(dim=0).to(torch.float64)
    fp = (pred & ~truth).sum(dim=0).to(torch.float64)
    fn = (~pred & truth).sum(dim=0).to(torch.float64)
    return tp, fp, fn


def f1_micro(probs: torch.Tensor, targets: torch.Tensor, threshold: float = THRESHOLD, *,
             validate_args: bool = True) -> float:
    """Micro F1: ``2 TP / (2 TP + FP + FN)`` with counts pooled over all N x C entries.

    An entry is predicted positive when ``probs >= threshold``. 0 when there is no true
    and no predicted positive at all (scikit-learn's ``zero_division=0``).
    """
    tp, fp, fn = _confusion(probs, targets, threshold, validate_args)
    denom = 2 * tp.sum() + fp.sum() + fn.sum()
    return (2 * tp.sum() / denom).item() if denom > 0 else 0.0


def f1_macro(probs: torch.Tensor, targets: torch.Tensor, threshold: float = THRESHOLD, *,
             validate_args: bool = True) -> float:
    """Macro F1: the mean over all C categories of ``2 TP_c / (2 TP_c + FP_c + FN_c)``.

    A category with no true and no predicted positive scores 0 (scikit-learn's
    ``f1_score(average='macro', zero_division=0)``).
    """
    tp, fp, fn = _confusion(probs, targets, threshold, validate_args)
    denom = 2 * tp + fp + fn
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1.0), torch.zeros_like(tp))
    return f1.mean().item()


def exact_match(probs: torch.Tensor, targets: torch.Tensor, threshold: float = THRESHOLD, *,
                validate_args: bool = True) -> float:
    """Subset accuracy: share of samples whose active set equals the true set exactly
    (scikit-learn's ``accuracy_score`` on multi-label indicators). An empty image counts
    as matched when nothing is active."""
    if validate_args:
        _check_threshold(threshold)
        _check_probs(probs)
        _check_targets(targets, probs.shape)
    pred = probs.detach() >= threshold
    return (pred == _binary(targets)).all(dim=1).to(torch.float64).mean().item()


def empty_fpr(probs: torch.Tensor, targets: torch.Tensor, threshold: float = THRESHOLD, *,
              validate_args: bool = True) -> float:
    """False-positive rate on empty images: the share of samples with no true category
    that have at least one score ``>= threshold``. Raises ValueError when no sample is empty."""
    if validate_args:
        _check_threshold(threshold)
        _check_probs(probs)
        _check_targets(targets, probs.shape)
    empty = ~_binary(targets).any(dim=1)
    if not empty.any():
        raise ValueError("empty_fpr is undefined: no sample has an empty target")
    fired = (probs.detach()[empty] >= threshold).any(dim=1)
    return fired.to(torch.float64).mean().item()


def mean_active(probs: torch.Tensor, threshold: float = THRESHOLD, *, validate_args: bool = True) -> float:
    """Mean number of active categories per sample: ``(1/N) sum_i #{c : probs_ic >= threshold}``."""
    if validate_args:
        _check_threshold(threshold)
        _check_probs(probs)
    return (probs.detach() >= threshold).sum(dim=1).to(torch.float64).mean().item()


# --------------------------------------------------------------------------- metric group


@metric_group("multilabel")
def multilabel_metrics(outputs: EvalOutputs, task, reference: EvalOutputs | None = None) -> dict[str, float]:
    """The presence metrics of a multilabel split.

    Returns ``map`` (ranking by ``ranking_scores``: logits for sigmoid losses,
    ``log_softmax`` for softmax ones; categories without a positive left out),
    ``f1_micro``, ``f1_macro``, ``exact_match``, ``mean_active`` (all at ``scores >= 0.5``),
    ``mean_labels`` (the true mean number of categories, for reading ``mean_active``),
    and ``empty_fpr`` when the split has empty images. ``map`` is left out when no
    category has a positive. ``reference`` is not used.
    """
    scores, targets = outputs.scores, outputs.targets
    _check_probs(scores, "scores")
    if scores.shape[1] != task.num_classes:
        raise ValueError(f"scores have {scores.shape[1]} columns but the task has {task.num_classes} categories")
    _check_targets(targets, scores.shape)
    fast = {"validate_args": False}
    result = {
        "f1_micro": f1_micro(scores, targets, **fast),
        "f1_macro": f1_macro(scores, targets, **fast),
        "exact_match": exact_match(scores, targets, **fast),
        "mean_active": mean_active(scores, **fast),
        "mean_labels": _binary(targets).sum(dim=1).to(torch.float64).mean().item(),
    }
    ap = average_precision(ranking_scores(outputs), targets, **fast)
    if not torch.isnan(ap).all():
        result["map"] = ap[~torch.isnan(ap)].mean().item()
    if not _binary(targets).any(dim=1).all():
        result["empty_fpr"] = empty_fpr(scores, targets, **fast)
    return result
