"""TensorBoard figures for ordinal runs: the error per true class (where a long tail hides).

Registered with ``@figure("ordinal")``; ``RunLogger.finish`` logs them for the test split
under ``test/<name>``. The confusion matrix is the generic one of ``plots/classification.py``.
matplotlib is imported inside the functions only.
"""

from __future__ import annotations

import torch

from softloss_cli.metrics.ordinal import expected_values, mae_per_class
from softloss_cli.plots.registry import figure, plain_log_ticks


@figure("ordinal")
def ordinal_figures(outputs, task) -> dict:
    """``{"mae_per_class": Figure}``: MAE per true class, argmax and expected value.

    Bars: MAE of the argmax prediction per true class; line: MAE of the expected value.
    Both are in label values (``task.values``); the x axis shows the class names. A grey
    step line on a second axis gives the number of samples of each class (log scale),
    so a large error on a class with 3 samples is read as such. Absent classes show no bar.
    """
    import matplotlib.pyplot as plt

    scores = outputs.scores.detach().to(torch.float64)
    c = scores.shape[1]
    values = torch.tensor(task.values, dtype=torch.float64)
    probs = scores / scores.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    argmax_mae, count = mae_per_class(values[scores.argmax(dim=1)], outputs.targets, c, values)
    expected_mae, _ = mae_per_class(expected_values(probs, values), outputs.targets, c, values)

    x = torch.arange(c).numpy()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * c + 2.0), 3.6), dpi=100, layout="tight")
    ax.bar(x, argmax_mae.numpy(), color="tab:blue", alpha=0.75, label="argmax")
    ax.plot(x, expected_mae.numpy(), color="tab:orange", marker="o", markersize=3, label="expected value")
    ax.set_xlabel("true class")
    ax.set_ylabel("MAE (label values)")
    ax.set_xticks(x)
    ax.set_xticklabels(task.class_names, fontsize=7, rotation=90 if c > 40 else 0)
    ax.set_xlim(-0.6, c - 0.4)
    counts = ax.twinx()
    shown = torch.where(count > 0, count.to(torch.float64), torch.nan)  # log axis: no 0; absent = gap
    counts.step(x, shown.numpy(), where="mid", color="0.5", linewidth=1, label="samples")
    counts.set_yscale("log")
    plain_log_ticks(counts.yaxis)
    counts.set_ylabel("samples (log)", color="0.4")
    counts.tick_params(axis="y", colors="0.4")
    handles = ax.get_legend_handles_labels()[0] + counts.get_legend_handles_labels()[0]
    # above the axes: inside, it would hide the head's sample counts or the tail's errors
    ax.legend(handles=handles, fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=3, frameon=False,
              handlelength=1.5, columnspacing=1.0)
    ax.set_title("test MAE per true class", loc="left", pad=16)  # room for the legend above the axes
    return {"mae_per_class": fig}
