"""TensorBoard figures for multilabel runs: AP per category and how many categories fire.

Registered with ``@figure("multilabel")``; ``RunLogger.finish`` logs them for the test
split under ``test/<name>``. matplotlib is imported inside the functions only.
"""

from __future__ import annotations

import torch

from softloss_cli.metrics.multilabel import THRESHOLD, average_precision, ranking_scores
from softloss_cli.plots.registry import figure

__all__ = ["multilabel_figures"]


@figure("multilabel")
def multilabel_figures(outputs, task) -> dict:
    """``{"ap_per_category": Figure, "active_count": Figure}``.

    ``ap_per_category``: average precision of every category (bars, categories without a
    positive left blank) and its F1 at ``scores >= 0.5`` (dots): mAP hides which
    categories a loss gives up on. ``active_count``: for each number n of categories, the
    share of test images with n true categories and with n scores >= 0.5 side by side;
    a softmax piles its predictions on 0 or 1, sigmoids can follow the truth.
    """
    import matplotlib.pyplot as plt

    scores, targets = outputs.scores, outputs.targets.to(torch.bool)
    c = scores.shape[1]
    ap = average_precision(ranking_scores(outputs), targets.to(torch.float32))
    pred = scores >= THRESHOLD
    tp = (pred & targets).sum(dim=0).to(torch.float64)
    denom = 2 * tp + (pred & ~targets).sum(dim=0) + (~pred & targets).sum(dim=0)
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))

    x = torch.arange(c).numpy()
    fig_ap, ax = plt.subplots(figsize=(max(5.0, 0.5 * c + 2.0), 3.6), dpi=100)
    ax.bar(x, torch.nan_to_num(ap, nan=0.0).numpy(), color="tab:blue", alpha=0.8, label="average precision")
    ax.plot(x, f1.numpy(), linestyle="none", marker="o", color="tab:orange", label=f"F1 at {THRESHOLD}")
    ax.set_xticks(x)
    ax.set_xticklabels(task.class_names, fontsize=7, rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test")
    ax.set_title(f"AP per category (mAP {ap[~torch.isnan(ap)].mean().item():.3f})", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig_ap.tight_layout()

    n_true = targets.sum(dim=1)
    n_pred = pred.sum(dim=1)
    top = int(max(n_true.max(), n_pred.max()))
    bins = torch.arange(top + 1)
    share_true = torch.bincount(n_true, minlength=top + 1).to(torch.float64) / len(n_true)
    share_pred = torch.bincount(n_pred, minlength=top + 1).to(torch.float64) / len(n_pred)
    fig_n, ax = plt.subplots(figsize=(max(4.0, 0.6 * top + 2.5), 3.2), dpi=100)
    ax.bar((bins - 0.2).numpy(), share_true.numpy(), width=0.4, color="0.6", label="true categories")
    ax.bar((bins + 0.2).numpy(), share_pred.numpy(), width=0.4, color="tab:blue", label=f"scores >= {THRESHOLD}")
    ax.set_xticks(bins.numpy())
    ax.set_xlabel("categories per image")
    ax.set_ylabel("share of test images")
    ax.set_title("how many categories are present vs predicted", fontsize=9)
    ax.legend(fontsize=7)
    fig_n.tight_layout()
    return {"ap_per_category": fig_ap, "active_count": fig_n}
