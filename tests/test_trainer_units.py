"""Unit tests of the trainer's small parts: loaders, augmentation, schedules, precision,
checkpoints, tasks and the loss/task compatibility check."""

from __future__ import annotations

import math

import pytest
import torch

from softloss_cli.config.compat import check_loss_task
from softloss_cli.data.augment import random_crop_flip
from softloss_cli.data.base import TensorSplit, check_targets
from softloss_cli.data.loaders import EpochLoader
from softloss_cli.errors import SoftlossError
from softloss_cli.losses import CrossEntropyLoss
from softloss_cli.tasks import Task
from softloss_cli.train import checkpoint as ckpt
from softloss_cli.train.precision import Precision, resolve_device, resolve_precision
from softloss_cli.train.schedules import constant, cosine


def _split(n=10):
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return TensorSplit(x, torch.arange(n), extras={"id": torch.arange(n) * 10})


def _loader(split, **kw):
    args = dict(batch_size=4, device="cpu", mean=(0.0,), std=(1 / 255,))  # normalisation = identity on 0..255
    args.update(kw)
    return EpochLoader(split, **args)


def test_loader_keeps_order_without_shuffle_and_covers_the_split():
    batches = list(_loader(_split()))
    assert [len(b.targets) for b in batches] == [4, 4, 2]
    targets = torch.cat([b.targets for b in batches])
    assert targets.tolist() == list(range(10))
    assert torch.cat([b.extras["id"] for b in batches]).tolist() == [10 * i for i in range(10)]
    assert batches[0].inputs[:, 0, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_shuffled_order_depends_only_on_seed_and_epoch():
    def order(seed, epoch):
        loader = _loader(_split(), shuffle=True, seed=seed)
        loader.set_epoch(epoch)
        return torch.cat([b.targets for b in loader]).tolist()

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(0, 2)
    assert order(0, 1) != order(1, 1)
    assert sorted(order(0, 1)) == list(range(10))


def test_drop_last_and_len():
    loader = _loader(_split(), drop_last=True)
    assert len(loader) == 2 and sum(1 for _ in loader) == 2
    assert len(_loader(_split())) == 3


def test_ddp_shards_are_disjoint_and_cover_the_split():
    shards = [torch.cat([b.targets for b in _loader(_split(), shuffle=True, rank=r, world_size=2)]) for r in (0, 1)]
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    assert sorted(torch.cat(shards).tolist()) == list(range(10))


@pytest.mark.parametrize("augment", [False, True])
def test_normalising_the_split_once_gives_the_bits_of_per_batch_normalising(monkeypatch, augment):
    from softloss_cli.data import loaders

    g = torch.Generator().manual_seed(0)
    split = TensorSplit(torch.randint(0, 256, (37, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(37))
    args = dict(batch_size=8, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26), shuffle=True, augment=augment)
    once = _loader(split, **args)
    assert once.inputs.dtype == torch.float32  # 37 x 192 floats: under the budget
    monkeypatch.setattr(loaders, "NORMALIZE_ONCE_MAX_BYTES", 4 * split.inputs.numel() - 1)
    per_batch = _loader(split, **args)
    assert per_batch.inputs.dtype == torch.uint8
    for epoch in (0, 3):
        once.set_epoch(epoch)
        per_batch.set_epoch(epoch)
        pairs = list(zip(once, per_batch, strict=True))
        assert len(pairs) == 5
        for a, b in pairs:
            assert torch.equal(a.targets, b.targets) and torch.equal(a.inputs, b.inputs)
    chunked = loaders.Normalizer((0.5,) * 3, (0.2,) * 3, "cpu").all(split.inputs, chunk=5)
    assert torch.equal(chunked, loaders.Normalizer((0.5,) * 3, (0.2,) * 3, "cpu")(split.inputs))


def test_crop_flip_keeps_shape_and_is_seeded():
    x = torch.rand(6, 3, 8, 8)
    a = random_crop_flip(x, torch.Generator().manual_seed(0))
    b = random_crop_flip(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    # with no padding a crop is the identity, so only flips remain
    c = random_crop_flip(x, torch.Generator().manual_seed(1), padding=0)
    for i in range(6):
        assert torch.equal(c[i], x[i]) or torch.equal(c[i], x[i].flip(-1))


def test_cosine_schedule_warms_up_then_decays_to_min():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine(opt, total_steps=10, warmup_fraction=0.2, min_lr_ratio=0.1)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    constant(opt2, total_steps=5)
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="warmup_fraction"):
        cosine(opt, total_steps=10, warmup_fraction=1.5)


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(SoftlossError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", cpu)
    with pytest.raises(SoftlossError, match="trainer.precision must be one of auto, fp32, bf16, fp16"):
        resolve_precision("half", cpu)
    with pytest.raises(SoftlossError, match="trainer.device must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(SoftlossError, match="no CUDA device"):
            resolve_device("cuda")
    p = Precision("bf16", cpu)
    with p.autocast():
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16 and not p.scaler.is_enabled()


def test_checkpoint_roundtrip_is_atomic_and_weights_only(tmp_path):
    ckpt.seed_everything(5)
    state = {"model": torch.nn.Linear(2, 2).state_dict(), "rng": ckpt.rng_state(), "epoch": 3}
    ckpt.save_atomic(state, tmp_path / "c" / "last.pt")
    assert not list(tmp_path.rglob("*.tmp"))
    loaded = ckpt.load(tmp_path / "c" / "last.pt")
    expected = torch.rand(3)
    ckpt.set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), expected)
    assert loaded["epoch"] == 3


def test_task_validation():
    task = Task("ordinal", 3)
    assert task.values == (0.0, 1.0, 2.0) and task.class_names == ("0", "1", "2")
    with pytest.raises(ValueError, match="strictly increasing"):
        Task("ordinal", 3, label_values=(0, 2, 1))
    with pytest.raises(ValueError, match="task kind must be one of"):
        Task("regression", 3)
    partial = Task("partial", 3, base_kind="multiclass")
    assert partial.eval_kind == "multiclass"


def test_labels_out_of_range_are_refused():
    task = Task("multiclass", 3)
    check_targets(task, "train", torch.tensor([0, 1, 2]))
    with pytest.raises(SoftlossError, match=r"val split has label 3 outside \[0, 3\)"):
        check_targets(task, "val", torch.tensor([0, 3]))
    with pytest.raises(SoftlossError, match="label -1"):
        check_targets(task, "test", torch.tensor([-1, 0]))


def test_compat_refuses_wrong_task_kind_with_the_valid_choices():
    loss = CrossEntropyLoss()
    loss.registry_name = "ce"
    check_loss_task(loss, Task("multiclass", 3), "digits", "one")
    with pytest.raises(SoftlossError, match=r"loss=ce does not fit data=shapes \(task kind 'multilabel'\); losses for multilabel data"):
        check_loss_task(loss, Task("multilabel", 3), "shapes", "one")


def test_ce_loss_matches_a_float64_reference_and_is_finite_for_huge_logits():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 5) * 3, torch.randint(0, 5, (16,))
    ref = sum(-(logits[i].double() - torch.logsumexp(logits[i].double(), 0))[target[i]] for i in range(16)) / 16
    assert CrossEntropyLoss()(logits, target).item() == pytest.approx(ref.item(), rel=1e-6)
    smooth = CrossEntropyLoss(label_smoothing=0.1)(logits, target)
    logp = torch.log_softmax(logits.double(), 1)
    ref_s = sum(-(0.9 * logp[i, target[i]] + 0.1 * logp[i].mean()) for i in range(16)) / 16
    assert smooth.item() == pytest.approx(ref_s.item(), rel=1e-6)
    big = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = big.detach().to(dtype).requires_grad_()
        loss = CrossEntropyLoss()(x, torch.tensor([1]))
        loss.backward()
        assert math.isfinite(loss.item()) and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="reduction must be one of mean, sum, none"):
        CrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        CrossEntropyLoss(label_smoothing=1.0)


@pytest.mark.parametrize("capability, expected", [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_on_cuda_follows_native_bf16(monkeypatch, capability, expected):
    """V100/T4 (7.x) emulate bf16: auto must pick fp16 + GradScaler there, bf16 from Ampere on."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("auto", torch.device("cuda")) == expected
    assert resolve_precision("auto", torch.device("cuda:0")) == expected


def test_non_finite_model_outputs_are_a_divergence():
    """A finite training loss with weights that overflow at evaluation: a recorded divergence,
    not a ValueError from inside a metric."""
    from softloss_cli.errors import DivergedError
    from softloss_cli.train.evaluate import to_eval_outputs

    loss = CrossEntropyLoss()
    good = {"logits": torch.randn(4, 3), "targets": torch.tensor([0, 1, 2, 0])}
    assert to_eval_outputs(good, loss, None).scores.shape == (4, 3)
    bad = {**good, "logits": torch.tensor([[float("inf"), 0.0, 0.0]] * 4)}
    with pytest.raises(DivergedError, match=r"non-finite model outputs on the val split \(4 non-finite values in logits\)"):
        to_eval_outputs(bad, loss, None, "val")
    aux_bad = {**good, "aux_logits": torch.full((4, 3), float("nan"))}
    with pytest.raises(DivergedError, match="12 non-finite values in aux_logits"):
        to_eval_outputs(aux_bad, loss, None, "test")
