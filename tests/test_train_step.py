"""``train/step.py``: the model's forward and the loss as one callable, compiled together by
``trainer.compile`` (checked here with the ``aot_eager`` backend: dynamo + AOTAutograd, no C++
build), giving what the eager step gives."""

from __future__ import annotations

import pytest
import torch

from softloss_cli.losses import LOSSES
from softloss_cli.models import SmallCNN
from softloss_cli.train.precision import Precision
from softloss_cli.train.step import forward_loss_fn


@pytest.mark.parametrize(("name", "heads"), [("rps", "one"), ("nl", "one"), ("two_head", "two")])
def test_compiled_step_matches_the_eager_one(name, heads):
    torch.manual_seed(0)
    model = SmallCNN((1, 16, 16), 6, channels=(4, 8), heads=heads)
    x = torch.randn(8, 1, 16, 16)
    y = torch.arange(8) % 6
    if name == "nl":
        y = torch.stack([y, torch.tensor([1, 0] * 4)], dim=1)
    precision = Precision("fp32", torch.device("cpu"))
    grads = []
    for backend in (None, "aot_eager"):
        model.zero_grad(set_to_none=True)
        forward_loss, train_model = forward_loss_fn(model, LOSSES.get(name)(), precision, backend)
        assert train_model is model  # compiled as a whole, not the model alone
        loss = forward_loss(x, y)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (a, ga), (b, gb) = grads
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert len(ga) == len(gb) > 0
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-6)


def test_under_ddp_the_model_alone_is_compiled():
    model = torch.nn.Linear(3, 2)
    precision = Precision("fp32", torch.device("cpu"))
    forward_loss, train_model = forward_loss_fn(model, LOSSES.get("ce")(), precision, "aot_eager", distributed=True)
    assert train_model is not model and forward_loss(torch.randn(4, 3), torch.tensor([0, 1, 1, 0])).ndim == 0
