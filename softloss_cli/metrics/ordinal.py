"""Ordinal metrics: how far off the predictions are, not only whether they are right.

Pure functions over whole-split tensors, each returning a Python float (``mae_per_class``
returns a tensor for plotting). Same conventions and argument checks as
``metrics/classification.py``: ``scores`` ``[N, C]`` are any real scores (only the argmax
is used; first maximal index on ties), ``probs`` ``[N, C]`` are probabilities whose rows
sum to 1, ``targets`` ``[N]`` are int64 class indices in ``[0, C)``; ``validate_args=False``
skips the checks. Everything is computed in float64.

Label values. Value-based metrics (``mae``, ``mae_expected``, ``amae``, the group sums) take
``values`` ``[C]``, strictly increasing (default ``0..C-1``); the metric group passes
``task.values``, so an error of one class step on labels ``(0, 10, 20)`` counts 10.
Class-step metrics (``rps``, ``qwk``, ``off1_acc``) use the class indices, as their
definitions do.
"""

from __future__ import annotations

import torch

from softloss_cli.metrics import EvalOutputs, metric_group
from softloss_cli.metrics.classification import (
    check_finite,
    check_matrix,
    check_probs,
    check_targets,
    normalise_rows,
)

__all__ = [
    "amae",
    "group_sum_mae",
    "mae",
    "mae_expected",
    "mae_per_class",
    "minimum_sensitivity",
    "mmae",
    "off1_accuracy",
    "ordinal_metrics",
    "qwk",
    "rps",
]

GROUP_SIZE = 8


# --------------------------------------------------------------------------- validation


def _values(values, c: int, device) -> torch.Tensor:
    """``values`` as float64 ``[C]`` (``0..C-1`` when None); refuses a wrong length or order."""
    if values is None:
        return torch.arange(c, dtype=torch.float64, device=device)
    v = torch.as_tensor(values, dtype=torch.float64, device=device)
    if v.ndim != 1 or v.shape[0] != c:
        raise ValueError(f"values must be 1-D with one value per class ({c}), got shape {tuple(v.shape)}")
    if not torch.isfinite(v).all():
        raise ValueError("values must be finite")
    if c > 1 and not (v.diff() > 0).all():
        raise ValueError("values must be strictly increasing")
    return v


def _check_group_size(group_size) -> None:
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be an int >= 1, got {group_size!r}")


def _check_scores_targets(scores, targets) -> None:
    check_matrix(scores, "scores")
    check_targets(targets, *scores.shape)


def _check_probs_targets(probs, targets) -> None:
    check_probs(probs)
    check_targets(targets, *probs.shape)


def _argmax(scores: torch.Tensor) -> torch.Tensor:
    return scores.detach().argmax(dim=1)


def _y(targets: torch.Tensor, device) -> torch.Tensor:
    return targets.to(device, torch.int64)


# --------------------------------------------------------------------------- metrics


def mae(scores: torch.Tensor, targets: torch.Tensor, values=None, *, validate_args: bool = True) -> float:
    """Mean absolute error of the argmax prediction, in label values.

    ``MAE = (1/N) sum_i |v_{argmax_c s_ic} - v_{y_i}|``

    Args:
        scores: ``[N, C]`` real scores (logits or probabilities).
        targets: ``[N]`` int64 class indices.
        values: ``[C]`` strictly increasing label values (default ``0..C-1``).
        validate_args: check shapes, dtypes, ranges and values first.

    Returns a float >= 0 (scikit-learn's ``mean_absolute_error`` on the mapped values).
    """
    if validate_args:
        _check_scores_targets(scores, targets)
    v = _values(values, scores.shape[1], scores.device)
    return (v[_argmax(scores)] - v[_y(targets, scores.device)]).abs().mean().item()


def expected_values(probs: torch.Tensor, values=None) -> torch.Tensor:
    """``E_p[v] = sum_c p_ic v_c`` per sample, float64 ``[N]`` (no checks)."""
    v = _values(values, probs.shape[1], probs.device)
    return probs.detach().to(torch.float64) @ v


def mae_expected(probs: torch.Tensor, targets: torch.Tensor, values=None, *, validate_args: bool = True) -> float:
    """Mean absolute error of the expected value of the predicted distribution (not rounded).

    ``MAE_E = (1/N) sum_i |sum_c p_ic v_c - v_{y_i}|``

    Args:
        probs: ``[N, C]`` probabilities, rows summing to 1.
        targets: ``[N]`` int64 class indices.
        values: ``[C]`` strictly increasing label values (default ``0..C-1``).
        validate_args: check shapes, dtypes, ranges, row sums and values first.

    Returns a float >= 0.
    """
    if validate_args:
        _check_probs_targets(probs, targets)
    v = _values(values, probs.shape[1], probs.device)
    return (expected_values(probs, v) - v[_y(targets, probs.device)]).abs().mean().item()


def rps(probs: torch.Tensor, targets: torch.Tensor, *, validate_args: bool = True) -> float:
    """Ranked probability score, normalised to [0, 1] (Epstein 1969).

    ``RPS = (1/N) sum_i 1/(C-1) sum_{k=0}^{C-2} (F_ik - 1[k >= y_i])^2``, ``F_ik = sum_{j<=k} p_ij``

    0 for a one-hot prediction of the true class; 1 for all mass on the class farthest from
    it when the label is an end class. The ``rps`` *loss* is the same without ``1/(C-1)``.
    Class steps, not label values.

    Args:
        probs: ``[N, C]`` probabilities, rows summing to 1, ``C >= 2``.
        targets: ``[N]`` int64 class indices.
        validate_args: check shapes, dtypes, ranges and row sums first.

    Returns a float in [0, 1].
    """
    if validate_args:
        _check_probs_targets(probs, targets)
    n, c = probs.shape
    if c < 2:
        raise ValueError("rps needs at least 2 classes")
    p = probs.detach().to(torch.float64)
    cdf = p.cumsum(dim=1)[:, :-1]
    k = torch.arange(c - 1, device=p.device)
    step = (k[None, :] >= _y(targets, p.device)[:, None]).to(torch.float64)
    return ((cdf - step).square().sum(dim=1) / (c - 1)).mean().item()


def qwk(scores: torch.Tensor, targets: torch.Tensor, *, validate_args: bool = True) -> float:
    """Quadratic weighted kappa (Cohen 1968) between argmax predictions and targets.

    ``kappa = 1 - sum_ij W_ij O_ij / sum_ij W_ij E_ij`` with ``O`` the C x C confusion counts
    (rows true, columns predicted), ``E_ij = (row_i total)(column_j total) / N`` (chance
    agreement with the same marginals) and ``W_ij = (i - j)^2``, over all C classes (classes
    absent from both targets and predictions add nothing). Equals scikit-learn's
    ``cohen_kappa_score(y, pred, weights="quadratic", labels=range(C))``.

    Our choice for the degenerate case ``sum W E = 0`` (targets and predictions all one and
    the same class, where kappa is 0/0 and scikit-learn returns NaN): 1.0, since every
    prediction is right.

    Args:
        scores: ``[N, C]`` real scores.
        targets: ``[N]`` int64 class indices.
        validate_args: check shapes, dtypes and ranges first.

    Returns a float in [-1, 1].
    """
    if validate_args:
        _check_scores_targets(scores, targets)
    n, c = scores.shape
    pred, y = _argmax(scores), _y(targets, scores.device)
    confusion = torch.bincount(y * c + pred, minlength=c * c).reshape(c, c).to(torch.float64)
    idx = torch.arange(c, dtype=torch.float64, device=scores.device)
    weights = (idx[:, None] - idx[None, :]).square()
    expected = confusion.sum(dim=1, keepdim=True) * confusion.sum(dim=0, keepdim=True) / n
    denominator = (weights * expected).sum()
    if denominator.item() == 0.0:
        return 1.0
    return (1.0 - (weights * confusion).sum() / denominator).item()


def off1_accuracy(scores: torch.Tensor, targets: torch.Tensor, *, validate_args: bool = True) -> float:
    """Off-by-one accuracy: share of argmax predictions at most one class from the label.

    ``(1/N) sum_i 1[|argmax_c s_ic - y_i| <= 1]`` (class steps).

    Args:
        scores: ``[N, C]`` real scores.
        targets: ``[N]`` int64 class indices.
        validate_args: check shapes, dtypes and ranges first.

    Returns a float in [0, 1], >= accuracy.
    """
    if validate_args:
        _check_scores_targets(scores, targets)
    diff = (_argmax(scores) - _y(targets, scores.device)).abs()
    return (diff <= 1).to(torch.float64).mean().item()


def mae_per_class(
    predictions: torch.Tensor, targets: torch.Tensor, num_classes: int, values=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per true class: mean ``|prediction - v_y|`` and the sample count.

    Args:
        predictions: ``[N]`` predicted *values* (float; e.g. ``v[argmax]`` or expected values).
        targets: ``[N]`` int64 class indices in ``[0, num_classes)``.
        num_classes: C.
        values: ``[C]`` label values (default ``0..C-1``).

    Returns ``(mae [C] float64, NaN for a class with no sample; count [C] int64)``,
    vectorised with ``scatter_add``.
    """
    v = _values(values, num_classes, predictions.device)
    y = _y(targets, predictions.device)
    err = (predictions.detach().to(torch.float64) - v[y]).abs()
    total = torch.zeros(num_classes, dtype=torch.float64, device=err.device).scatter_add_(0, y, err)
    count = torch.bincount(y, minlength=num_classes)
    return total / count.to(torch.float64), count  # 0 / 0 = NaN marks an absent class


def _present_class_maes(scores: torch.Tensor, targets: torch.Tensor, values, validate_args: bool) -> torch.Tensor:
    """The argmax MAE of each class present in ``targets`` (``mae_per_class``), float64 ``[|K|]``:
    what ``amae`` averages and ``mmae`` takes the worst of."""
    if validate_args:
        _check_scores_targets(scores, targets)
    c = scores.shape[1]
    v = _values(values, c, scores.device)
    per_class, count = mae_per_class(v[_argmax(scores)], targets, c, v)
    return per_class[count > 0]


def amae(scores: torch.Tensor, targets: torch.Tensor, values=None, *, validate_args: bool = True) -> float:
    """Macro-averaged MAE (Baccianella et al. 2009): the mean over *present* classes of the
    argmax MAE of each true class.

    ``AMAE = (1/|K|) sum_{k in K} (1/N_k) sum_{i: y_i = k} |v_{pred_i} - v_k|``, ``K`` = the
    classes with ``N_k > 0``. Every class counts equally, so the rare tail classes weigh as
    much as the frequent head ones (plain MAE is dominated by the head).

    Args:
        scores: ``[N, C]`` real scores.
        targets: ``[N]`` int64 class indices.
        values: ``[C]`` strictly increasing label values (default ``0..C-1``).
        validate_args: check shapes, dtypes, ranges and values first.

    Returns a float >= 0.
    """
    return _present_class_maes(scores, targets, values, validate_args).mean().item()


def mmae(scores: torch.Tensor, targets: torch.Tensor, values=None, *, validate_args: bool = True) -> float:
    """Maximum MAE over classes (Cruz-Ramírez et al. 2014): the argmax MAE of the *worst* present class.

    ``MMAE = max_{k in K} (1/N_k) sum_{i: y_i = k} |v_{pred_i} - v_k|``, ``K`` = the classes with
    ``N_k > 0``. Where ``amae`` averages the per-class errors, this reports the worst one: on
    long-tailed data it is usually a rare tail class.

    Convention: label values (``values``, default ``0..C-1``) and the classes present in the
    targets. dlordinal's ``mmae`` counts class *positions* among the labels that occur in
    targets or predictions; the two agree when every class occurs in one of them and the
    values are ``0..C-1`` (tested, as is the difference).

    Args:
        scores: ``[N, C]`` real scores.
        targets: ``[N]`` int64 class indices.
        values: ``[C]`` strictly increasing label values (default ``0..C-1``).
        validate_args: check shapes, dtypes, ranges and values first.

    Returns a float >= 0, >= ``amae``.
    """
    return _present_class_maes(scores, targets, values, validate_args).max().item()


def minimum_sensitivity(scores: torch.Tensor, targets: torch.Tensor, *, validate_args: bool = True) -> float:
    """Minimum sensitivity (MS): the lowest per-class recall of the argmax, over present classes.

    ``MS = min_{k in K} (1/N_k) sum_{i: y_i = k} 1[pred_i = k]``, ``K`` = the classes with ``N_k > 0``.

    0 as soon as one present class is never predicted right, so it shows whether the tail
    classes are learnt at all. Convention: classes absent from the targets are skipped;
    dlordinal's ``minimum_sensitivity`` (scikit-learn's ``recall_score(average=None)``) also
    scores a class that is only *predicted*, with recall 0 (tested, as is the difference).

    Args:
        scores: ``[N, C]`` real scores.
        targets: ``[N]`` int64 class indices.
        validate_args: check shapes, dtypes and ranges first.

    Returns a float in [0, 1].
    """
    if validate_args:
        _check_scores_targets(scores, targets)
    n, c = scores.shape
    y = _y(targets, scores.device)
    hits = torch.zeros(c, dtype=torch.float64, device=scores.device).scatter_add_(
        0, y, (_argmax(scores) == y).to(torch.float64))
    count = torch.bincount(y, minlength=c)
    return (hits[count > 0] / count[count > 0].to(torch.float64)).min().item()


def group_sum_mae(
    predictions: torch.Tensor, true_values: torch.Tensor, group_size: int = GROUP_SIZE
) -> float:
    """Error of sums over consecutive groups: ``(1/G) sum_g |sum_{i in g} pred_i - sum_{i in g} true_i|``.

    Samples are taken in their stored order in consecutive groups of ``group_size``
    (``0..7``, ``8..15``, ...); a last incomplete group is dropped, ``G = N // group_size``.
    This is the scenario's target: the count of a batch of 8 images. Errors of opposite
    sign cancel inside a group, so an unbiased predictor scores far below ``8 * MAE``.

    Args:
        predictions: ``[N]`` predicted values (expected values or ``v[argmax]``).
        true_values: ``[N]`` true label values.
        group_size: samples per group, an int >= 1 (default 8).

    Returns a float >= 0. Raises ValueError when ``N < group_size`` (no complete group).
    """
    _check_group_size(group_size)
    if predictions.ndim != 1 or predictions.shape != true_values.shape:
        raise ValueError(
            f"predictions and true_values must be 1-D of equal length, got {tuple(predictions.shape)} "
            f"and {tuple(true_values.shape)}"
        )
    g = predictions.shape[0] // group_size
    if g == 0:
        raise ValueError(f"need at least {group_size} samples for one group, got {predictions.shape[0]}")
    diff = predictions.detach().to(torch.float64) - true_values.detach().to(torch.float64)
    return diff[: g * group_size].reshape(g, group_size).sum(dim=1).abs().mean().item()


# --------------------------------------------------------------------------- metric group


@metric_group("ordinal")
def ordinal_metrics(outputs: EvalOutputs, task, reference: EvalOutputs | None = None) -> dict[str, float]:
    """The ordinal metrics of a split whose task kind is ordinal (``task.values`` as label values).

    Returns ``mae`` (argmax), ``mae_expected`` (expected value of the predicted distribution),
    ``rps`` (normalised), ``qwk``, ``off1_acc``, ``amae``, ``mmae`` (worst class's MAE), ``ms``
    (minimum sensitivity: the worst class's recall), and, when the split has at least
    8 samples, ``group8_sum_mae`` (sums of expected values over consecutive groups of 8 in
    stored order) and ``group8_sum_mae_argmax`` (sums of argmax values).

    Probabilities are ``outputs.scores`` with every row divided by its sum (float64), as in
    ``classification_metrics``: a no-op for softmax losses. ``reference`` is not used.
    """
    scores, targets = outputs.scores, outputs.targets
    check_matrix(scores, "scores")
    check_finite(scores, "scores")
    if scores.min().item() < 0.0:
        raise ValueError("scores must be non-negative probabilities (softmax or sigmoid outputs)")
    n, c = scores.shape
    if c != task.num_classes:
        raise ValueError(f"scores have {c} columns but the task has {task.num_classes} classes")
    if c < 2:
        raise ValueError("ordinal metrics need at least 2 classes")
    check_targets(targets, n, c)

    v = _values(task.values, c, scores.device)
    probs = normalise_rows(scores)
    fast = {"validate_args": False}
    result = {
        "mae": mae(scores, targets, v, **fast),
        "mae_expected": mae_expected(probs, targets, v, **fast),
        "rps": rps(probs, targets, **fast),
        "qwk": qwk(scores, targets, **fast),
        "off1_acc": off1_accuracy(scores, targets, **fast),
        "amae": amae(scores, targets, v, **fast),
        "mmae": mmae(scores, targets, v, **fast),
        "ms": minimum_sensitivity(scores, targets, **fast),
    }
    if n >= GROUP_SIZE:
        true_values = v[_y(targets, v.device)]
        result[f"group{GROUP_SIZE}_sum_mae"] = group_sum_mae(expected_values(probs, v), true_values, GROUP_SIZE)
        result[f"group{GROUP_SIZE}_sum_mae_argmax"] = group_sum_mae(v[_argmax(scores)], true_values, GROUP_SIZE)
    return result
