"""TensorBoard figures of the confidence scenario: how decisive the gate of a routed model is.

Registered with ``@figure("multiclass", "ordinal")``; ``RunLogger.finish`` logs them for the
test split under ``test/<name>``. Models without ``gate_logits`` (every model but
``routed_experts``) get no figure. matplotlib is imported inside the function only.
"""

from __future__ import annotations

import torch

from softloss_cli.plots.registry import figure

__all__ = ["gate_figures"]

BINS = 20


@figure("multiclass", "ordinal")
def gate_figures(outputs, task) -> dict:
    """``{"gate_max_prob": Figure}``: histograms of the gate's max probability and of the
    expert each sample is routed to (the argmax of the gate).

    Left: share of test samples per bin of ``max_e softmax(gate_logits)_e`` on [1/E, 1]
    (a decisive gate piles up at 1; a mixing gate spreads towards 1/E), with the 0.9 and
    0.99 thresholds of ``gate_decisive_share_*`` as dotted lines. Right: share of samples
    per expert (a collapsed router puts every sample on one bar).
    """
    gate_logits = outputs.aux.get("gate_logits")
    if gate_logits is None or gate_logits.ndim != 2 or gate_logits.shape[0] == 0:
        return {}
    import matplotlib.pyplot as plt

    gate = torch.softmax(gate_logits.to(torch.float64), dim=1)
    n, e = gate.shape
    max_prob, route = gate.max(dim=1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    weights = torch.full((n,), 1.0 / n).numpy()
    left.hist(max_prob.numpy(), bins=BINS, range=(1.0 / e, 1.0), weights=weights, color="tab:blue")
    for t in (0.9, 0.99):
        left.axvline(t, color="black", linestyle=":", linewidth=1)
    left.set_xlabel("gate max probability")
    left.set_ylabel("share of samples")
    left.set_title(f"gate decisiveness (E={e})")
    usage = torch.bincount(route, minlength=e).double() / n
    right.bar(range(e), usage.numpy(), color="tab:orange")
    right.set_xticks(range(e))
    right.set_xlabel("expert (argmax of the gate)")
    right.set_ylim(0, 1)
    right.set_title("hard-route usage")
    fig.tight_layout()
    return {"gate_max_prob": fig}
