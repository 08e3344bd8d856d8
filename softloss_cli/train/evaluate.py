"""Evaluation: one pass over a split with ``torch.no_grad``; scores stay on the device until
the split ends, then move to the CPU once and become an ``EvalOutputs``."""

from __future__ import annotations

import contextlib

import torch

from softloss_cli.data.base import TensorSplit
from softloss_cli.errors import DivergedError
from softloss_cli.metrics import EvalOutputs


def as_outputs(out) -> dict[str, torch.Tensor]:
    """A model's output as a dict with at least ``logits`` (a bare tensor is the logits)."""
    return {"logits": out} if torch.is_tensor(out) else dict(out)


@torch.no_grad()
def predict(model, loader, precision, channels_last: bool = False, dist=None) -> dict[str, torch.Tensor]:
    """Concatenated model outputs (float32, CPU) plus ``targets`` and per-sample ``extra/*``.

    ``dist`` (a ``DistEnv`` of a DDP run): ``loader`` holds this rank's shard; the outputs of
    all ranks are gathered on the device, in the split's stored order, before the one copy
    to the CPU, so every rank returns the whole split.
    """
    was_training = model.training
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    for batch in loader:
        x = batch.inputs.contiguous(memory_format=torch.channels_last) if channels_last else batch.inputs
        with precision.autocast():
            out = as_outputs(model(x))
        out["targets"] = batch.targets
        out.update({f"extra/{k}": v for k, v in batch.extras.items()})
        for name, value in out.items():
            chunks.setdefault(name, []).append(value.float() if value.is_floating_point() else value)
    model.train(was_training)
    joined = {name: torch.cat(parts) for name, parts in chunks.items()}
    if dist is not None:
        joined = dist.gather_outputs(joined, len(loader.split))
    return {name: value.cpu() for name, value in joined.items()}


@contextlib.contextmanager
def metric_threads(outputs: EvalOutputs):
    """One CPU thread while the metrics of a small split are computed (under 2**20 scores).

    Metrics are dozens of small reductions; split over OpenMP threads each one waits at a
    barrier for every thread, and on a CPU shared with other processes that wait is a
    scheduler slice: we measured the classification metrics of 2,500 x 30 scores at 0.6 s
    with 2 threads on a loaded 2-core machine, 0.02 s with one. Large splits keep the threads.
    """
    threads = torch.get_num_threads()
    small = outputs.scores.numel() < 2**20 and threads > 1
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(threads)


def to_eval_outputs(pred: dict[str, torch.Tensor], loss_fn, split, name: str = "evaluated") -> EvalOutputs:
    """Scores from the loss's activation; logits scaled by its ``logit_scale`` (softmax losses),
    so that ``softmax(outputs.logits) == outputs.scores``.

    Raises ``DivergedError`` when a model output is not finite: the training loss can stay
    finite while the weights grow until a forward pass overflows (``negated_ce`` in fp16), and
    that run has diverged; it must be recorded so, not fail inside a metric.
    """
    for key, value in pred.items():
        if key != "targets" and not key.startswith("extra/") and value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise DivergedError(f"non-finite model outputs on the {name} split ({bad} non-finite values in "
                                    f"{key}): the weights overflowed; the last good checkpoint is kept")
    logits = pred["logits"] * getattr(loss_fn, "logit_scale", 1.0)
    scores = torch.sigmoid(logits) if loss_fn.activation == "sigmoid" else torch.softmax(logits, dim=-1)
    aux = {k: v for k, v in pred.items() if k not in ("logits", "targets") and not k.startswith("extra/")}
    extras = {k.removeprefix("extra/"): v for k, v in pred.items() if k.startswith("extra/")}
    posterior = split.posterior if isinstance(split, TensorSplit) else None
    info = {"activation": loss_fn.activation, "set_source": loss_fn.set_source}
    return EvalOutputs(logits, pred["targets"], scores, aux, posterior, extras, info)
