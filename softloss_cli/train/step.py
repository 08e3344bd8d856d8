"""The forward half of a training step (model under autocast, then the loss), as one callable.

``trainer.compile`` compiles this callable, so the loss is traced and fused together with
the model's last layers (inductor then writes the loss's kernels; ``losses/fused.py`` leaves
the tracing to the outer compile). Under DDP the model alone is compiled, as before: DDP's
graph splitting (DDPOptimizer) is for a traced DDP module, and the loss stays eager there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from softloss_cli.train.evaluate import as_outputs


def forward_loss_fn(train_model, loss_fn, precision, backend: str | None = None,
                    distributed: bool = False) -> tuple[Callable, object]:
    """``(forward_loss, model)``: ``forward_loss(x, targets) -> loss`` runs ``train_model`` under
    ``precision``'s autocast and ``loss_fn`` on its outputs (``logits`` plus any auxiliary output
    passed by name); ``model`` is the module to call ``.train()`` on.

    With ``backend`` the whole callable is compiled (``torch.compile(backend=backend)``), or
    under DDP (``distributed``) the model alone.
    """
    if backend and distributed:
        train_model = torch.compile(train_model, backend=backend)

    def forward_loss(x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with precision.autocast():
            out = as_outputs(train_model(x))
        return loss_fn(out.pop("logits"), targets, **out)

    if backend and not distributed:
        return torch.compile(forward_loss, backend=backend), train_model
    return forward_loss, train_model
