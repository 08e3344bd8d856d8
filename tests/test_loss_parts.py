"""``LazyParts``: a loss's ``last_parts``, whose costlier terms are computed when read."""

from __future__ import annotations

import torch

from softloss_cli.losses import LOSSES
from softloss_cli.losses.base import LazyParts


def test_a_later_term_runs_once_on_first_read():
    calls = []
    parts = LazyParts({"main": torch.tensor(1.0)})
    parts.later("side", lambda: calls.append(1) or torch.tensor(2.0))
    parts.merge({"direct": torch.tensor(3.0), "lazy": lambda: torch.tensor(4.0)})
    assert calls == [] and set(parts) == {"main", "side", "direct", "lazy"} and len(parts) == 4
    assert {k: float(v) for k, v in parts.items()} == {"main": 1.0, "side": 2.0, "direct": 3.0, "lazy": 4.0}
    assert float(parts["side"]) == 2.0 and calls == [1]
    del parts["side"]
    assert "side" not in parts


def test_nl_parts_read_later_are_the_batch_means_of_that_call():
    """The terms are bound to the call that set them: a later call does not change them."""
    loss = LOSSES.get("nl")()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 7, generator=g)
    target = torch.stack([torch.randint(0, 7, (64,), generator=g), torch.arange(64) % 3 == 0], dim=1).long()
    loss(logits, target)
    parts = loss.last_parts
    log_p = torch.log_softmax(logits.double(), dim=1)
    label, positive = target[:, 0], target[:, 1].bool()
    p_l = log_p.gather(1, label[:, None]).squeeze(1).exp()
    loss(torch.randn(64, 7, generator=g), target)  # another call: new parts object, the old one kept
    ce = -log_p.gather(1, label[:, None]).squeeze(1)
    torch.testing.assert_close(parts["pos_ce"].double(), ce[positive].mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts["neg_term"].double(), (-torch.log1p(-p_l))[~positive].mean(), rtol=1e-5, atol=1e-6)


def test_partial_losses_scale_by_positives_the_same_on_both_paths(monkeypatch):
    """``normalize='positives'``: the CPU path (the factor as a number, inside the rows) and the
    device path (a tensor factor, no host sync) give the same loss and gradient."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(50, 6, generator=g)
    target = torch.stack([torch.randint(0, 6, (50,), generator=g), (torch.rand(50, generator=g) < 0.3).long()], dim=1)
    for name in ("nl", "negated_ce"):
        results = []
        for compiling in (False, True):
            monkeypatch.setattr(torch.compiler, "is_compiling", lambda c=compiling: c)
            z = logits.clone().requires_grad_()
            value = LOSSES.get(name)()(z, target)
            value.backward()
            results.append((value.detach(), z.grad))
        torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-6, atol=1e-8)
        positives = int(target[:, 1].sum())
        assert positives and abs(float(results[0][0])) > 0  # the factor 50 / positives applied on both
