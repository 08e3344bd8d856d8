"""Metrics of a training split with negative labels (task kind ``partial``).

``train/loop.py:final_evaluation`` scores the training split of a partial task with the
last checkpoint (the end of training) and prefixes ``train/``: ``train/neg_violation_rate`` is the share of
samples labelled "not l" that the model still predicts as l. Validation and test splits
keep true labels and get the usual metrics (accuracy, NLL, ECE...).

Targets are int64 ``[N, 2]`` rows ``(label, is_positive)``.
"""

from __future__ import annotations

import torch

from softloss_cli.metrics import EvalOutputs, metric_group

__all__ = ["logit_gap", "neg_violation_prob", "neg_violation_rate", "negative_metrics", "positive_accuracy"]


def _check(scores, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """``(label [N], positive bool [N])`` after checking shapes, dtypes and label ranges."""
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2 or not scores.is_floating_point():
        raise ValueError(f"scores must be a 2-D floating-point tensor [N, C], got {getattr(scores, 'shape', type(scores).__name__)}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if not isinstance(targets, torch.Tensor) or targets.ndim != 2 or targets.shape[1] != 2:
        raise ValueError(f"targets must be [N, 2] rows (label, is_positive), got {getattr(targets, 'shape', None)}")
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise ValueError(f"targets must be an integer tensor, got dtype {targets.dtype}")
    if targets.shape[0] != scores.shape[0] or scores.shape[0] == 0:
        raise ValueError(f"need the same non-zero number of rows: {scores.shape[0]} scores, {targets.shape[0]} targets")
    label = targets[:, 0].long()
    if label.min().item() < 0 or label.max().item() >= scores.shape[1]:
        raise ValueError(f"labels must be in [0, {scores.shape[1] - 1}], got {label.min().item()}..{label.max().item()}")
    return label, targets[:, 1] != 0


def neg_violation_rate(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of negative-labelled samples whose prediction is the forbidden label.

    ``(1/|Neg|) sum_{i in Neg} 1[argmax_c s_ic = l_i]``, where ``Neg`` are the rows with
    ``is_positive = 0`` and ``l_i`` their forbidden class; argmax takes the first maximal
    index on ties (as ``torch.argmax``). A model that ignores the negatives violates at
    about its error rate on them; a uniform guess at ``1/C``.

    Args:
        scores: ``[N, C]`` real scores (logits or probabilities; only the order counts).
        targets: int64 ``[N, 2]`` (label, is_positive).

    Raises ValueError when no row is negative. Returns a float in [0, 1].
    """
    label, positive = _check(scores, targets)
    neg = ~positive
    if not neg.any():
        raise ValueError("no negative-labelled samples (is_positive = 0) to score")
    hit = scores.argmax(dim=1) == label
    return hit[neg].to(torch.float64).mean().item()


def neg_violation_prob(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean probability left on the forbidden label: ``(1/|Neg|) sum_{i in Neg} p_{i, l_i}``.

    A smooth companion of ``neg_violation_rate`` (it moves before the argmax flips).
    ``probs`` are the model's ``[N, C]`` probabilities. Raises ValueError when no row is
    negative. Returns a float in [0, 1], computed in float64.
    """
    label, positive = _check(probs, targets)
    neg = ~positive
    if not neg.any():
        raise ValueError("no negative-labelled samples (is_positive = 0) to score")
    p = probs.detach().to(torch.float64).gather(1, label[:, None]).squeeze(1)
    return p[neg].mean().item()


def positive_accuracy(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Accuracy on the positive-labelled samples: ``(1/|Pos|) sum_{i in Pos} 1[argmax_c s_ic = y_i]``.

    Raises ValueError when no row is positive. Returns a float in [0, 1].
    """
    label, positive = _check(scores, targets)
    if not positive.any():
        raise ValueError("no positive-labelled samples (is_positive = 1) to score")
    hit = scores.argmax(dim=1) == label
    return hit[positive].to(torch.float64).mean().item()


def logit_gap(logits: torch.Tensor) -> float:
    """Median over samples of ``max_c z_ic - min_c z_ic``: how far apart the logits have been pushed.

    Softmax is invariant to a shift of the logits, not to their spread: a bounded loss keeps
    it at tens, while an unbounded one (``negated_ce``) drives it up for ever, so this number
    shows a divergence that did not reach inf. The median (our choice) ignores a few
    outlying samples; for an even N it is the lower of the two middle values (``torch.median``). Args: ``logits [N, C]`` finite. Returns a float >= 0, computed in float64.
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.numel() == 0:
        raise ValueError(f"logits must be a non-empty 2-D tensor [N, C], got {getattr(logits, 'shape', None)}")
    if not torch.isfinite(logits).all():
        raise ValueError("logits must be finite")
    z = logits.detach().to(torch.float64)
    return (z.amax(dim=1) - z.amin(dim=1)).median().item()


@metric_group("partial")
def negative_metrics(outputs: EvalOutputs, task, reference: EvalOutputs | None = None) -> dict[str, float]:
    """Training-split metrics of a partial task: ``neg_violation_rate`` and ``neg_violation_prob``
    (when the split has negatives), ``pos_accuracy`` (when it has positives) and ``logit_gap``.

    Scores are ``outputs.scores`` (the loss's activation). A split without negatives (or
    without positives) omits those keys rather than report a 0/0. ``reference`` is unused.
    """
    scores, targets = outputs.scores, outputs.targets
    _, positive = _check(scores, targets)
    result = {}
    if (~positive).any():
        result["neg_violation_rate"] = neg_violation_rate(scores, targets)
        result["neg_violation_prob"] = neg_violation_prob(scores / scores.sum(dim=1, keepdim=True).clamp_min(1e-30), targets)
    if positive.any():
        result["pos_accuracy"] = positive_accuracy(scores, targets)
    result["logit_gap"] = logit_gap(outputs.logits)
    return result
