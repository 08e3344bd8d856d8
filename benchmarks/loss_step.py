"""Loss in the step: training images/s with each loss, relative to ``ce``, in one process.

Two configurations, those of the runner-overhead benchmark (benchmarks/overhead.py):

- ``gpu``: ``resnet18`` at batch 512 on 3x32x32 inputs (10 classes, as ``data=fake``), bf16
  autocast + channels_last, on CUDA;
- ``cpu``: ``small_cnn`` at batch 256 on 1x32x32 inputs (30 classes, as ``data=ordinal_images``),
  float32, on the CPU.

A step is the runner's step (``train/step.py``'s forward under autocast, the loss, backward,
SGD with Nesterov momentum) on batches held on the device (random inputs: the figure is about
the loss's share of a step, not about learning). Targets follow each loss's task kind (class
indices; multi-hot for multi-label losses; (label, is_positive) pairs with half negatives for
partial-label losses); ``two_head`` trains a model with the second head. Every registered loss
is measured, so losses added later are measured too.

Each round times ``steps`` steps of every loss, each right after ``steps`` steps of ``ce``, after
warm-up steps (cudnn autotuning, compilation of the fused loss); a loss's figure is the median
over rounds of its images/s over that of the ``ce`` steps just before. Target: at least 0.95x
for every loss.
"""

from __future__ import annotations

import time

from common import Section, median, table
from loss_cost import loss_choices

TARGET = 0.95
CONFIGS = {
    "gpu": {"model": "resnet18", "input": (3, 32, 32), "classes": 10, "batch": 512, "device": "cuda",
            "precision": "bf16", "channels_last": True, "steps": 30, "warmup": 8, "rounds": 3},
    "cpu": {"model": "small_cnn", "input": (1, 32, 32), "classes": 30, "batch": 256, "device": "cpu",
            "precision": "fp32", "channels_last": False, "steps": 3, "warmup": 1, "rounds": 5},
}
QUICK = {"batch": 16, "steps": 2, "warmup": 1, "rounds": 2}


def make_targets(loss, b: int, c: int, generator):
    """Targets of ``loss``'s task kind for a batch of ``b`` samples and ``c`` classes (CPU tensors)."""
    import torch

    kinds = getattr(loss, "task_kinds", ("multiclass",))
    labels = torch.randint(0, c, (b,), generator=generator)
    if "multiclass" in kinds or "ordinal" in kinds:
        return labels
    if "multilabel" in kinds:
        return (torch.rand(b, c, generator=generator) < 2.0 / c).float()
    return torch.stack([labels, (torch.rand(b, generator=generator) < 0.5).long()], dim=1)


class Trainer:
    """One model + optimiser + loss, stepping through a few batches held on the device."""

    def __init__(self, loss, c: dict, seed: int = 0):
        import torch

        from softloss_cli.models import ResNet18, SmallCNN
        from softloss_cli.train.precision import Precision
        from softloss_cli.train.step import forward_loss_fn

        self.device = torch.device(c["device"])
        torch.manual_seed(seed)
        heads = "two" if getattr(loss, "needs_aux", False) else "one"
        # the output layer the loss trains (coral, corn, clm: their own heads, as the configs'
        # model.head follows loss.head), else the linear one
        head = getattr(loss, "needs_head", None) or "linear"
        model_cls = ResNet18 if c["model"] == "resnet18" else SmallCNN
        model = model_cls(c["input"], c["classes"], heads=heads, head=head)
        fmt = torch.channels_last if c["channels_last"] else torch.contiguous_format
        self.model = model.to(self.device, memory_format=fmt)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
        self.precision = Precision(c["precision"], self.device)
        if hasattr(loss, "bind_task"):
            from types import SimpleNamespace

            loss.bind_task(SimpleNamespace(num_classes=c["classes"], values=tuple(range(c["classes"]))))
        self.forward_loss, self.train_model = forward_loss_fn(self.model, loss, self.precision)
        g = torch.Generator().manual_seed(seed)
        self.batches = [(torch.randn(c["batch"], *c["input"], generator=g).to(self.device).contiguous(memory_format=fmt),
                         make_targets(loss, c["batch"], c["classes"], g).to(self.device)) for _ in range(4)]
        self.i = 0
        self.model.train()

    def steps(self, n: int) -> float:
        """Seconds for ``n`` training steps (synchronised on CUDA)."""
        import torch

        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            x, y = self.batches[self.i % len(self.batches)]
            self.i += 1
            loss = self.forward_loss(x, y)
            self.opt.zero_grad(set_to_none=True)
            self.precision.scaler.scale(loss).backward()
            self.precision.scaler.step(self.opt)
            self.precision.scaler.update()
        sync()
        return time.perf_counter() - t0


def measure(config: str = "cpu", quick: bool = False, names=None, device: str | None = None) -> dict:
    """``{"config": ..., "losses": {name: {"ratio", "images_per_s", "ce_images_per_s", "rounds"}}}``."""
    import torch

    c = {**CONFIGS[config], **(QUICK if quick else {})}
    if device:
        c["device"] = device
    if c["device"] == "cpu" and c["precision"] != "fp32":
        c["precision"] = "fp32"
    losses = {k: v for k, v in loss_choices().items() if names is None or k in names or k == "ce"}
    losses = {"ce": losses.pop("ce"), **dict(sorted(losses.items()))}
    trainers, out = {}, {}
    for name, loss in losses.items():
        if isinstance(loss, Exception):
            out[name] = f"n/a ({type(loss).__name__}: {str(loss).splitlines()[0][:60]})"
            continue
        try:
            trainers[name] = Trainer(loss, c)
            trainers[name].steps(c["warmup"])
        except Exception as exc:  # one loss that does not fit this configuration must not stop the others
            out[name] = f"error ({type(exc).__name__}: {str(exc).splitlines()[0][:60]})"
            trainers.pop(name, None)
    images = c["steps"] * c["batch"]
    rates: dict[str, list[float]] = {n: [] for n in trainers}
    ratios: dict[str, list[float]] = {n: [] for n in trainers}
    ce = trainers.get("ce")
    for _ in range(c["rounds"]):
        for name, trainer in trainers.items():
            # ce right before each loss: the ratio compares neighbours in time (a drifting load,
            # or whatever favours the first model of a round, cancels out).
            ce_rate = images / ce.steps(c["steps"]) if ce is not None and name != "ce" else None
            rate = images / trainer.steps(c["steps"])
            rates[name].append(rate)
            ratios[name].append(rate / ce_rate if ce_rate else 1.0)
    ce_rates = rates.get("ce", [])
    for name, r in rates.items():
        out[name] = {"ratio": median(ratios[name]), "images_per_s": median(r),
                     "ce_images_per_s": median(ce_rates) if ce_rates else float("nan"), "rounds": ratios[name]}
    del trainers
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"config": c, "config_name": config, "losses": out}


def render(m: dict) -> tuple[str, list[str]]:
    """A markdown table of one configuration, and the losses under the target."""
    rows, missed = [], []
    for name, r in m["losses"].items():
        if not isinstance(r, dict):
            rows.append([f"`{name}`", "-", str(r), "-"])
            continue
        ok = r["ratio"] >= TARGET
        if not ok:
            missed.append(name)
        rows.append([f"`{name}`", f"{r['images_per_s']:,.0f}", f"**{r['ratio']:.3f}x**",
                     "**met**" if ok else "**missed**"])
    return table(["loss", "images/s (median)", "relative to ce", f"target >= {TARGET}x"], rows), missed


def describe(c: dict) -> str:
    return (f"`{c['model']}`, batch {c['batch']}, {'x'.join(map(str, c['input']))} inputs, {c['classes']} classes, "
            f"{c['device']} {c['precision']}" + (", channels_last" if c["channels_last"] else "")
            + f"; {c['rounds']} rounds of {c['steps']} steps per loss after {c['warmup']} warm-up steps")


def run(quick: bool = False, gpu: bool = False) -> Section:
    import torch

    parts, data, verdicts = [], {}, []
    threads = torch.get_num_threads()
    for config in ["cpu"] + (["gpu"] if gpu else []):
        # One CPU thread, as in the loss-cost section: the ratio is one of work, free of OpenMP
        # barrier stalls when other processes share the cores.
        torch.set_num_threads(1 if config == "cpu" else threads)
        try:
            m = measure(config, quick)
        finally:
            torch.set_num_threads(threads)
        data[config] = m
        md, missed = render(m)
        n = sum(isinstance(r, dict) for r in m["losses"].values())
        parts += [f"**{config.upper()}**: {describe(m['config'])}" + (", one thread:" if config == "cpu" else ":"),
                  "", md, ""]
        verdicts.append((f"loss in the step, {config} ({n} losses)", f"{n - len(missed)} of {n} within target",
                         f">= {TARGET}x ce", not missed))
    if not gpu:
        parts += ["<!-- device:step -->", "**GPU**: not measured in this session (no CUDA device); "
                  "`benchmarks/device_run.sh` measures it and `benchmarks/fold_device.py` puts it here.",
                  "<!-- /device:step -->", "", "<!-- device:pytest -->",
                  "**gpu-marked tests**: not run in this session (no CUDA device).", "<!-- /device:pytest -->"]
    data["verdicts"] = verdicts
    return Section("Loss in the step", "\n".join(parts), data)
