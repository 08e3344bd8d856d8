"""TensorBoard figures for multiclass runs: Average-K set sizes and accuracy per class bucket.

Registered with ``@figure("multiclass")``; ``RunLogger.finish`` logs them for the test
split under ``test/<name>``. The thresholds are the ones the metrics chose on the
validation split (``outputs.info['avgk_thresholds']``, set by
``metrics.average_k.average_k_metrics`` when it scored the test split); without them
(outputs built by hand) they are chosen on the split drawn. matplotlib is imported
inside the functions only.
"""

from __future__ import annotations

import math

import torch

from softloss_cli.metrics.average_k import (
    AVGK_KS,
    BUCKETS,
    avgk_bucket_accuracy,
    avgk_covered,
    avgk_set_sizes,
    avgk_threshold,
    class_buckets,
    oracle_inclusion,
    set_scores,
)
from softloss_cli.plots.registry import figure

__all__ = ["average_k_figures"]


def _thresholds(outputs, scores: torch.Tensor, ks) -> dict[int, float]:
    chosen = outputs.info.get("avgk_thresholds") or {}
    return {k: chosen[k] if k in chosen else avgk_threshold(scores, k) for k in ks}


@figure("multiclass")
def average_k_figures(outputs, task) -> dict:
    """``{"avgk_set_size": Figure, "avgk_by_bucket": Figure}`` for K in (1, 2, 3, 5), K < C.

    ``avgk_set_size``: one panel per K, the histogram of test set sizes (share of samples
    per size, size 0 = empty set) with the realised mean as a dashed line: a model that
    reads ambiguity spreads the sizes, one that does not piles them on K.
    ``avgk_by_bucket``: Average-K accuracy of the samples of head / medium / tail classes
    (terciles of the training class counts, ``task.extras['train_class_counts']``, else
    this split's label counts), one group of bars per K; black ticks mark the Bayes
    oracle's expected accuracy where the data knows the posterior.
    """
    import matplotlib.pyplot as plt

    c = task.num_classes
    ks = [k for k in AVGK_KS if k < c]
    if not ks:
        return {}
    scores, from_aux = set_scores(outputs)
    targets = outputs.targets
    thresholds = _thresholds(outputs, scores, ks)
    source = "multi-label head" if from_aux else ("sigmoid" if outputs.info.get("activation") == "sigmoid" else "softmax")

    sizes = {k: avgk_set_sizes(scores, thresholds[k]) for k in ks}
    largest = max(int(s.max()) for s in sizes.values())
    fig_sizes, axes = plt.subplots(1, len(ks), figsize=(3.2 * len(ks), 3.0), dpi=100, sharey=True, squeeze=False)
    for ax, k in zip(axes[0], ks):
        share = torch.bincount(sizes[k], minlength=largest + 1).to(torch.float64) / len(sizes[k])
        ax.bar(torch.arange(largest + 1).numpy(), share.numpy(), color="tab:blue", width=0.8)
        mean = sizes[k].to(torch.float64).mean().item()
        ax.axvline(mean, color="tab:red", linestyle="--", linewidth=1, label=f"mean {mean:.2f}")
        ax.set_title(f"K = {k}")
        ax.set_xlabel("set size")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("share of test samples")
    fig_sizes.suptitle(f"Average-K set sizes on test ({source}, threshold from validation)", fontsize=9)
    fig_sizes.tight_layout()

    counts = task.extras.get("train_class_counts") if getattr(task, "extras", None) else None
    if counts is None or len(counts) != c:
        counts = torch.bincount(targets.to(torch.int64), minlength=c)
    bucket = class_buckets(counts)
    model_acc = torch.stack([avgk_bucket_accuracy(avgk_covered(scores, targets, thresholds[k]), targets, bucket)
                             for k in ks])  # [K, 3]
    oracle_acc = None
    if outputs.posterior is not None:
        post = outputs.posterior.to(torch.float64)
        rows = []
        for k in ks:
            hits = (post * oracle_inclusion(outputs.posterior.to(torch.float32), k)).sum(dim=0)
            mass = post.sum(dim=0)
            rows.append(torch.tensor([
                (hits[bucket == b].sum() / mass[bucket == b].sum()).item() if mass[bucket == b].sum() > 0 else math.nan
                for b in range(len(BUCKETS))
            ]))
        oracle_acc = torch.stack(rows)
    fig_buckets, ax = plt.subplots(figsize=(3.6 + 1.6 * len(ks), 3.4), dpi=100)
    width = 0.8 / len(BUCKETS)
    colours = ("tab:blue", "tab:orange", "tab:red")
    for b, name in enumerate(BUCKETS):
        x = torch.arange(len(ks), dtype=torch.float64) + (b - 1) * width
        n_classes = int((bucket == b).sum())
        ax.bar(x.numpy(), model_acc[:, b].numpy(), width=width, color=colours[b], label=f"{name} ({n_classes} classes)")
        if oracle_acc is not None:
            ax.scatter(x.numpy(), oracle_acc[:, b].numpy(), marker="_", s=250, color="black", linewidths=2,
                       label="Bayes oracle" if b == 0 else None, zorder=3)
    ax.set_xticks(range(len(ks)))
    ax.set_xticklabels([f"K = {k}" for k in ks])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("Average-K accuracy")
    ax.set_title(f"test Average-K accuracy by class frequency ({source})", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars reach 1
    fig_buckets.tight_layout()
    return {"avgk_set_size": fig_sizes, "avgk_by_bucket": fig_buckets}
