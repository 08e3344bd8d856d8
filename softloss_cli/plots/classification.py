"""Figures every classification run gets: a reliability diagram (all task kinds) and a
confusion matrix (multiclass and ordinal, up to ``MAX_CONFUSION_CLASSES`` classes).

Registered with ``softloss_cli.plots.registry.figure``; the trainer logs them to TensorBoard
as ``test/<name>`` images and saves them as ``plots/test_<name>.png``. matplotlib is
imported inside the functions only (``task_figures`` has already chosen the Agg backend).
"""

from __future__ import annotations

import torch

from softloss_cli.metrics import EvalOutputs
from softloss_cli.plots.registry import figure, plain_log_ticks

__all__ = ["confusion_counts", "confusion_matrix_figure", "reliability_figure", "reliability_multilabel"]

#: bins of the reliability diagram (the same 15 equal-width bins as the ``ece`` metric).
RELIABILITY_BINS = 15
#: above this many classes a confusion matrix is unreadable (and 10k+ cells): not drawn.
MAX_CONFUSION_CLASSES = 50


def confusion_counts(pred: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 ``[C, C]`` counts: row = true class, column = predicted class (one ``bincount``)."""
    pred = pred.to(torch.int64).reshape(-1)
    targets = targets.to(torch.int64).reshape(-1)
    flat = torch.bincount(targets * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def reliability_multilabel(scores: torch.Tensor, targets: torch.Tensor, n_bins: int = RELIABILITY_BINS):
    """Per-label calibration of sigmoid scores: every (sample, class) pair is one prediction.

    Returns ``(mean_score, positive_rate, count)``, each ``[n_bins]`` (float64, NaN for an
    empty bin; int64 counts). Bin ``b`` covers ``(b/M, (b+1)/M]`` with 0 in the first bin,
    as ``metrics.classification.reliability_bins`` does for the top-1 confidence.
    """
    s = scores.detach().to(torch.float64).reshape(-1)
    y = targets.detach().to(torch.float64).reshape(-1)
    inner = torch.arange(1, n_bins, dtype=torch.float64) / n_bins
    idx = torch.bucketize(s, inner, right=False)
    count = torch.bincount(idx, minlength=n_bins)
    score_sum = torch.zeros(n_bins, dtype=torch.float64).scatter_add_(0, idx, s)
    pos_sum = torch.zeros(n_bins, dtype=torch.float64).scatter_add_(0, idx, y)
    denom = count.to(torch.float64)
    return score_sum / denom, pos_sum / denom, count


#: colours of the reliability diagram; every one of them has a legend entry.
OBSERVED_COLOUR = "tab:blue"
OVER_COLOUR = "tab:red"  # confidence above the observed rate: over-confident
UNDER_COLOUR = "tab:orange"  # observed rate above the confidence: under-confident


def _diagram(confidence, accuracy, count, *, xlabel: str, ylabel: str, title: str):
    """Bars of the observed rate per bin over the diagonal, and the bin counts (log scale) below.

    Every bar is opaque and no two overlap, so every colour on the plot is one of the
    legend's: the observed rate (blue) up to the bin's mean confidence or to its own top,
    whichever is lower; the gap between them in red where the confidence is higher
    (over-confident: the red part sits on top of the blue bar) or in orange where the
    observed rate is higher (under-confident: the orange part is the top of the bar, above
    the confidence); a black tick at the mean confidence of every bin.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    n_bins = len(count)
    edges = torch.arange(n_bins + 1, dtype=torch.float64) / n_bins
    centres = ((edges[:-1] + edges[1:]) / 2).numpy()
    width = 1.0 / n_bins
    filled = (count > 0).numpy()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.6, 6.0), sharex=True, layout="constrained",
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    x = centres[filled]
    acc = accuracy.numpy()[filled]
    conf = confidence.numpy()[filled]
    low = np.minimum(acc, conf)
    over = conf > acc
    top.bar(x, low, width=width, color=OBSERVED_COLOUR, edgecolor="black", linewidth=0.5, label=f"{ylabel} (up to the confidence)")
    if over.any():
        top.bar(x[over], (conf - acc)[over], bottom=acc[over], width=width, color=OVER_COLOUR, edgecolor="black",
                linewidth=0.5, label=f"over-confident: confidence - {ylabel}")
    if (~over).any():
        top.bar(x[~over], (acc - conf)[~over], bottom=conf[~over], width=width, color=UNDER_COLOUR,
                edgecolor="black", linewidth=0.5, label=f"under-confident: {ylabel} - confidence")
    top.scatter(x, conf, marker="_", s=120, color="black", linewidths=1.5, zorder=3, label="mean confidence of a bin")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel(ylabel)
    top.set_title(title, fontsize="medium")
    # Below the plots: inside, the legend would hide bars of one calibration or another.
    fig.legend(*top.get_legend_handles_labels(), loc="outside lower center", ncols=1, fontsize="small")
    bottom.bar(centres, count.numpy(), width=width, color="grey", edgecolor="black", linewidth=0.5)
    if int(count.max()) > 0:
        bottom.set_yscale("log")
        plain_log_ticks(bottom.yaxis)
    bottom.set_xlabel(xlabel)
    bottom.set_ylabel("count")
    return fig


@figure("multiclass", "ordinal", "multilabel")
def reliability_figure(outputs: EvalOutputs, task) -> dict:
    """``reliability``: observed accuracy against confidence in 15 equal-width bins.

    Single-label tasks (multiclass, ordinal, and the base kind of partial tasks): top-1
    confidence ``max_c p_c`` against the share of correct argmax predictions, with rows of
    ``outputs.scores`` normalised to sum to 1 first (as the ``ece`` metric does, so sigmoid
    models are drawn the way their ECE is computed); the title gives that ECE.
    Multilabel: every (sample, class) sigmoid score against the rate of positives among
    the pairs in its bin (per-label calibration; softmax scores are drawn as they are).
    """
    from softloss_cli.metrics.classification import ece, reliability_bins

    if task.eval_kind == "multilabel":
        confidence, rate, count = reliability_multilabel(outputs.scores, outputs.targets)
        n = int(count.sum())
        filled = count > 0
        error = float(((rate - confidence).abs()[filled] * count[filled]).sum() / max(n, 1))
        fig = _diagram(confidence, rate, count, xlabel="score of each (sample, class) pair",
                       ylabel="share of positives",
                       title=f"per-label reliability ({outputs.scores.shape[0]} samples)\ncalibration error {error:.3f}")
        return {"reliability": fig}
    scores = outputs.scores.detach().to(torch.float64)
    total = scores.sum(dim=1, keepdim=True)
    probs = torch.where(total > 0, scores / total.clamp_min(torch.finfo(torch.float64).tiny),
                        torch.full_like(scores, 1.0 / scores.shape[1]))
    bins = reliability_bins(probs, outputs.targets, RELIABILITY_BINS, validate_args=False)
    value = ece(probs, outputs.targets, RELIABILITY_BINS, validate_args=False)
    fig = _diagram(bins.confidence, bins.accuracy, bins.count, xlabel="confidence (max probability)",
                   ylabel="accuracy", title=f"reliability ({scores.shape[0]} samples), ECE {value:.3f}")
    return {"reliability": fig}


def confusion_matrix_figure(counts: torch.Tensor, class_names, title: str = "confusion matrix"):
    """A ``[C, C]`` count matrix drawn with a LOG colour scale (rows true, columns predicted).

    Empty cells stay white; the scale starts at 1, so the rare off-diagonal confusions of a
    long-tailed or ordinal task stay visible next to a heavy diagonal. Counts are written in
    the cells when C <= 12; tick labels are thinned to about 15 per axis.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    c = counts.shape[0]
    array = counts.numpy().astype(np.float64)
    masked = np.ma.masked_where(array <= 0, array)
    size = min(6.0, 3.0 + 0.1 * c)
    fig, ax = plt.subplots(figsize=(size + 1.2, size), layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    vmax = max(1.0, float(array.max()))
    image = ax.imshow(masked, cmap=cmap, norm=LogNorm(vmin=1.0, vmax=max(vmax, 1.0 + 1e-9)),
                      interpolation="nearest", origin="upper")
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8, label="count (log scale)")
    plain_log_ticks(colorbar.ax.yaxis)
    step = max(1, int(np.ceil(c / 15)))  # at most ~15 labels an axis: legible in a TensorBoard card
    ticks = np.arange(0, c, step)
    names = [str(class_names[i]) if i < len(class_names) else str(i) for i in ticks]
    ax.set_xticks(ticks, names, rotation=90 if max((len(n) for n in names), default=0) > 2 else 0,
                  fontsize="small")
    ax.set_yticks(ticks, names, fontsize="small")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{title} ({int(array.sum())} samples)")
    if c <= 12:
        for i in range(c):
            for j in range(c):
                if array[i, j] > 0:
                    ax.text(j, i, str(int(array[i, j])), ha="center", va="center", fontsize="x-small",
                            color="white" if array[i, j] < np.sqrt(vmax) else "black")
    return fig


@figure("multiclass", "ordinal")
def confusion_figure(outputs: EvalOutputs, task) -> dict:
    """``confusion_matrix``: counts of (true, argmax-predicted) class on the split, log colour scale.

    Drawn for single-label tasks with at most ``MAX_CONFUSION_CLASSES`` (50) classes; above
    that nothing is returned. The predicted class is ``argmax`` of the scores (first index
    on ties, as the ``accuracy`` metric).
    """
    c = outputs.scores.shape[1]
    if c > MAX_CONFUSION_CLASSES:
        return {}
    counts = confusion_counts(outputs.scores.argmax(dim=1), outputs.targets, c)
    return {"confusion_matrix": confusion_matrix_figure(counts, task.class_names)}
