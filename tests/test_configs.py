"""Every shipped choice composes, instantiates and (for models and losses) runs a forward pass."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from softloss_cli.config import catalog
from softloss_cli.losses import LOSSES, ClassificationLoss


@pytest.mark.parametrize("name", catalog.choices("data"))
def test_every_data_config_composes_with_loader_keys(compose_cfg, name):
    cfg = compose_cfg([f"data={name}"])
    assert cfg.data.name == name
    for key in ("batch_size", "eval_batch_size", "num_workers", "augment"):
        assert key in cfg.data, f"configs/data/{name}.yaml lacks {key}"


@pytest.mark.parametrize("name", catalog.choices("model"))
@pytest.mark.parametrize("heads", ["one", "two"])
def test_every_model_instantiates_and_gives_logits(compose_cfg, name, heads):
    cfg = compose_cfg([f"model={name}", f"model.heads={heads}"])
    model = instantiate(cfg.model, input_shape=[3, 32, 32], num_classes=7)
    out = model.eval()(torch.randn(2, 3, 32, 32))
    logits = out if torch.is_tensor(out) else out["logits"]
    assert logits.shape == (2, 7)
    if heads == "two":
        assert out["aux_logits"].shape == (2, 7)


@pytest.mark.parametrize("name", catalog.choices("loss"))
def test_every_loss_config_instantiates_a_registered_loss(compose_cfg, name):
    cfg = compose_cfg([f"loss={name}"])
    loss = instantiate(cfg.loss)
    assert isinstance(loss, ClassificationLoss)
    assert type(loss).registry_name in LOSSES
    assert loss.task_kinds and loss.activation in ("softmax", "sigmoid")


@pytest.mark.parametrize("group", ["optim", "sched", "trainer"])
def test_other_groups_compose(compose_cfg, group):
    for name in catalog.choices(group):
        cfg = compose_cfg([f"{group}={name}"])
        assert cfg[group] is not None


def test_optimizer_and_schedule_instantiate(compose_cfg):
    model = torch.nn.Linear(3, 2)
    for optim in catalog.choices("optim"):
        for sched in catalog.choices("sched"):
            cfg = compose_cfg([f"optim={optim}", f"sched={sched}"])
            opt = instantiate(cfg.optim, params=model.parameters())
            scheduler = instantiate(cfg.sched, optimizer=opt, total_steps=10)
            for _ in range(10):
                opt.step()
                scheduler.step()


def test_default_run_dir_names_data_and_loss(compose_cfg):
    from omegaconf import OmegaConf

    cfg = compose_cfg(["loss=ce", "data=digits"], return_hydra_config=True)
    hydra_cfg = OmegaConf.to_container(cfg.hydra, resolve=False)
    assert "${hydra:runtime.choices.data}-${hydra:runtime.choices.loss}" in hydra_cfg["run"]["dir"]
    assert hydra_cfg["sweep"]["subdir"] == "${hydra.job.num}"
