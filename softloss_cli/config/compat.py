"""Refuse a loss that cannot train on the chosen data or model, before any training."""

from __future__ import annotations

import warnings

from softloss_cli.config import catalog
from softloss_cli.errors import SoftlossError
from softloss_cli.tasks import Task


def losses_for(kind: str) -> list[str]:
    """Loss configs (the names users type) whose class accepts task kind ``kind``."""
    return [name for name in catalog.choices("loss") if kind in catalog.loss_class(name).task_kinds]


def check_loss_task(loss, task: Task, data_name: str, heads: str, loss_name: str | None = None) -> None:
    """One-line SoftlossError when ``loss`` does not fit ``task`` or the model's heads.

    Losses marked ``order_sensitive`` (ordinal losses) accept multiclass data, taking the
    class index order as the label order, with a warning.
    """
    name = loss_name or getattr(loss, "registry_name", type(loss).__name__)
    if task.kind not in loss.task_kinds:
        raise SoftlossError(
            f"loss={name} does not fit data={data_name} (task kind '{task.kind}'); "
            f"losses for {task.kind} data: {', '.join(losses_for(task.kind))}"
        )
    if loss.needs_aux and heads != "two":
        raise SoftlossError(f"loss={name} needs a second head: add model.heads=two")
    if getattr(loss, "order_sensitive", False) and task.kind == "multiclass":
        warnings.warn(
            f"loss={name} is an ordinal loss and data={data_name} is multiclass: "
            "the order of the class indices is taken as the label order",
            stacklevel=2,
        )


#: the ordinal output layers (``model.head``) that train only with their own loss.
OWN_LOSS_HEADS = ("coral", "corn")


def check_head(loss, task: Task, data_name: str, head: str, loss_name: str | None = None) -> None:
    """One-line SoftlossError when the output layer ``model.head`` does not fit the loss or the task.

    * ``loss=coral|corn|clm`` (a loss with ``needs_head``) needs ``model.head`` of that name;
    * ``model.head=coral|corn`` trains only with its own loss: their class distribution is a
      decoding of C-1 binary tasks (CORAL's clamps negative differences), so a loss on it
      would not train the tasks the papers define;
    * ``model.head=clm`` gives a proper class distribution (its log is the ``logits``): it
      trains with ``loss=clm`` or any softmax loss of single-label data (``ce``, ``rps``,
      ``wk``, ``unimodal``...), not with a sigmoid loss;
    * a non-linear head needs ordinal (or multiclass, read in index order) data.
    """
    name = loss_name or getattr(loss, "registry_name", type(loss).__name__)
    needed = getattr(loss, "needs_head", "")
    if needed and head != needed:
        raise SoftlossError(f"loss={name} needs model.head={needed} (got model.head={head})")
    if head == "linear":
        return
    if head in OWN_LOSS_HEADS and needed != head:
        raise SoftlossError(f"model.head={head} trains only with loss={head}, got loss={name}")
    if loss.activation != "softmax":
        raise SoftlossError(f"model.head={head} gives class probabilities; loss={name} is a sigmoid loss: "
                            f"use loss=clm or a softmax loss (ce, rps, sord...)")
    kind = task.eval_kind
    if kind not in ("ordinal", "multiclass"):
        raise SoftlossError(f"model.head={head} is an ordinal output layer; data={data_name} is {kind} "
                            f"(use model.head=linear)")
