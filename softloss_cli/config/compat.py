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
