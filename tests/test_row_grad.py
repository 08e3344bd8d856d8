"""``RowLossWithGrad``'s backward and ``reduce_loss``'s mean: what makes a closed-form gradient
cheap on the CPU (one number for the upstream gradient, the saved gradient scaled in place when
the graph is freed) must give the same gradients as autograd would in every way it is called:
retained graphs, accumulation, upstream factors, several heads."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import REPO

from softloss_cli.losses import fused
from softloss_cli.losses.base import RowLossWithGrad, reduce_loss

sys.path.insert(0, str(REPO / "benchmarks"))
import loss_cost  # noqa: E402

LOSSES = {k: v for k, v in loss_cost.loss_choices().items() if not isinstance(v, Exception)}
# every loss whose gradient is a saved closed form (row losses, batch kappa losses, two heads)
CLOSED_FORM = ["asl", "bce", "nl", "rps", "sord", "wk", "mce_wk", "two_head", "focal", "cdw_ce", "ev_l1_ce", "epr"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_cpu_mean_has_the_bits_of_mean_and_hands_back_one_value(dtype):
    for n in (1, 2, 3, 7, 100, 4096, 5001, 65537):
        for seed in range(5):
            g = torch.Generator().manual_seed(seed)
            x = (torch.randn(n, generator=g) * torch.rand((), generator=g) * 100).to(dtype).requires_grad_()
            got = reduce_loss(x, "mean")
            assert torch.equal(got, x.mean()), (n, seed)
            (grad,) = torch.autograd.grad(got, x)
            assert grad.stride() == (0,) and torch.equal(grad, torch.full_like(x, 1.0 / n))
    assert torch.isnan(reduce_loss(torch.zeros(0), "mean"))


def _grads(name, mode, how):
    """Gradients of the logits (and aux logits) of loss ``name`` on fixed inputs, for one way of
    calling backward (``how``)."""
    loss = LOSSES[name]
    logits, target, aux = loss_cost.make_inputs(loss, 48, 9, "cpu", torch.Generator().manual_seed(3))
    inputs = [logits.detach().requires_grad_(), *(a.detach().requires_grad_() for a in aux.values())]
    aux = dict(zip(aux, inputs[1:]))
    with fused.mode_as(mode):
        if how == "once":
            loss(inputs[0], target, **aux).backward()
        elif how == "retained x3":  # the graph kept: each backward adds the same gradient again
            value = loss(inputs[0], target, **aux)
            for _ in range(3):
                value.backward(retain_graph=True)
        elif how == "x2.5":
            (loss(inputs[0], target, **aux) * 2.5).backward()
        elif how == "grad":  # torch.autograd.grad: no accumulation into .grad
            return list(torch.autograd.grad(loss(inputs[0], target, **aux), inputs))
        elif how == "twice":  # two graphs, accumulated into the same .grad
            loss(inputs[0], target, **aux).backward()
            loss(inputs[0], target, **aux).backward()
    return [x.grad for x in inputs]


@pytest.mark.parametrize("mode", ["off", "kernel"])
@pytest.mark.parametrize("name", CLOSED_FORM)
def test_backward_gives_autograds_gradients_however_it_is_called(name, mode):
    once = _grads(name, mode, "once")
    for how, factor in (("retained x3", 3.0), ("x2.5", 2.5), ("grad", 1.0), ("twice", 2.0)):
        got = _grads(name, mode, how)
        for a, b in zip(got, once):
            torch.testing.assert_close(a, b * factor, rtol=1e-6, atol=1e-7, msg=f"{name} {mode} {how}")


@pytest.mark.parametrize("name", ["two_head", "nl", "ev_l1_ce", "mce_wk", "epr"])
def test_parts_read_after_backward_and_zeroed_grads_are_those_of_the_forward(name):
    """A gradient handed on in place must not be shared with anything the loss keeps: the parts
    read later (``LazyParts``) are unchanged by backward and by zeroing the gradients in place."""
    loss = LOSSES[name]
    logits, target, aux = loss_cost.make_inputs(loss, 64, 9, "cpu", torch.Generator().manual_seed(5))
    loss(logits, target, **aux)
    before = {k: v.clone() for k, v in loss.last_parts.items()}
    loss(logits, target, **aux).backward()
    logits.grad.zero_()
    for a in aux.values():
        a.grad.zero_()
    after = dict(loss.last_parts.items())
    assert set(after) == set(before)
    for k in before:
        torch.testing.assert_close(after[k], before[k], equal_nan=True, msg=k)


def test_one_saved_gradient_for_two_inputs_is_scaled_once_for_each():
    """The same tensor given as two inputs' gradient (not done by any loss, allowed by the API)
    is not scaled in place twice."""
    z1, z2 = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3, requires_grad=True)
    grad = torch.randn(5, 3)
    expected = grad.clone()  # the node owns `grad` (it may scale it in place)
    values = RowLossWithGrad.apply(torch.zeros(5), (2.0, 3.0), z1, z2, grad, grad)
    reduce_loss(values, "mean").backward()
    torch.testing.assert_close(z1.grad, expected * 2.0 / 5)
    torch.testing.assert_close(z2.grad, expected * 3.0 / 5)


def test_a_per_row_upstream_gradient_is_applied_row_by_row():
    z = torch.randn(4, 3, requires_grad=True)
    grad = torch.randn(4, 3)
    weights = torch.tensor([1.0, 0.0, 2.0, -1.0])
    (RowLossWithGrad.apply(torch.zeros(4), (0.5,), z, grad) * weights).sum().backward()
    torch.testing.assert_close(z.grad, 0.5 * grad * weights[:, None])
