"""Loss cost: forward + backward of every loss a user can pick, relative to ``ce``, same logits.

Every ``configs/loss/*.yaml`` is instantiated as shipped (plus any registered loss no config
names, with its defaults). Inputs: logits ``[B, C]`` (``randn * 3``, requires grad), targets
of the loss's task kind (class indices; multi-hot for multi-label losses; (label, is_positive)
pairs with half negatives for partial-label losses), ``aux_logits`` for two-head losses.
Each repeat times ``inner`` forward+backward calls of the loss and, right after, of ``ce`` on
the same tensors; the figure is the median over repeats of the per-pair ratio.
Target: at most 1.5x ``ce`` (``two_head``, which has a second head to train, at most 2.5x).
"""

from __future__ import annotations

import time

from common import REPO, Section, median, table

B = 4096
CLASSES = (30, 100, 1081)
TARGET, TARGET_TWO_HEAD = 1.5, 2.5


def instantiate_config(path):
    """The loss a ``configs/loss/*.yaml`` file describes: Hydra's ``instantiate`` where Hydra is
    installed, else the same for these flat files (``_target_`` plus keyword arguments), so the
    benchmark also runs where only torch is (the lent GPU machine)."""
    try:
        from hydra.utils import instantiate
        from omegaconf import OmegaConf
    except ImportError:
        import importlib

        import yaml

        cfg = yaml.safe_load(path.read_text())
        module, _, name = cfg.pop("_target_").rpartition(".")
        return getattr(importlib.import_module(module), name)(**cfg), module + "." + name
    cfg = OmegaConf.load(path)
    return instantiate(cfg), cfg.get("_target_")


def loss_choices() -> dict[str, object]:
    """name -> loss module: every shipped loss config, then registered losses without one (as
    other branches add them, e.g. ``coral``, ``wk``), each with its defaults."""
    from softloss_cli.losses import LOSSES

    out, targets = {}, set()
    for path in sorted((REPO / "softloss_cli" / "configs" / "loss").glob("*.yaml")):
        try:
            out[path.stem], target = instantiate_config(path)
            targets.add(target)
        except Exception as exc:  # a loss being written right now must not stop the benchmark
            out[path.stem] = exc
    for entry in LOSSES.entries():
        target = f"{entry.obj.__module__.rsplit('.', 1)[0]}.{entry.obj.__name__}"
        if entry.name not in out and target not in targets and f"{entry.obj.__module__}.{entry.obj.__name__}" not in targets:
            try:
                out[entry.name] = entry.obj()
            except Exception as exc:
                out[entry.name] = exc
    return out


def make_inputs(loss, b: int, c: int, device, generator):
    """(logits, target, aux) for ``loss``'s task kind."""
    import torch

    logits = (torch.randn(b, c, generator=generator) * 3).to(device).requires_grad_(True)
    kinds = getattr(loss, "task_kinds", ("multiclass",))
    labels = torch.randint(0, c, (b,), generator=generator)
    if "multiclass" in kinds or "ordinal" in kinds:
        target = labels
    elif "multilabel" in kinds:
        target = (torch.rand(b, c, generator=generator) < 2.0 / c).float()
    else:  # partial: (label, is_positive), half of them negative labels
        target = torch.stack([labels, (torch.rand(b, generator=generator) < 0.5).long()], dim=1)
    aux = {}
    native = getattr(loss, "native_key", None)  # coral/corn: the head's [B, C-1] outputs, not the logits
    if native:
        aux[native] = (torch.randn(b, c - 1, generator=generator) * 3).to(device).requires_grad_(True)
    if getattr(loss, "needs_aux", False):
        aux["aux_logits"] = (torch.randn(b, c, generator=generator) * 3).to(device).requires_grad_(True)
    return logits, target.to(device), aux


def time_loss(loss, logits, target, aux, inner: int, sync) -> float:
    """The fastest of ``inner`` forward+backward calls: a call the scheduler interrupted (on a
    shared machine) says nothing about the loss."""
    tensors = [logits, *aux.values()]
    best = float("inf")
    for _ in range(inner):
        for t in tensors:
            t.grad = None
        sync()
        t0 = time.perf_counter()
        loss(logits, target, **aux).backward()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def path_taken(before: dict, after: dict) -> str:
    """Which path the calls between two snapshots of ``fused.counts`` took: fused, eager or both."""
    ran = {path for key, n in after.items() if n > before.get(key, 0) for path in [key[1]]}
    return "+".join(sorted(ran)) if ran else "plain torch"


def measure(device_name: str = "cpu", repeats: int = 7, classes=CLASSES, batch: int = B, names=None,
            modes=("auto", "off")) -> dict:
    """``{loss: {C: {mode: {ratio, ms, ce_ms, path}}}}``: forward + backward time of each loss in
    each fused mode (``losses/fused.py``: ``auto`` is the default path, ``off`` the eager one,
    ``on`` compiled) over ``ce``'s, paired and interleaved repeats, medians."""
    import torch

    from softloss_cli.losses import fused

    device = torch.device(device_name)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    inner = 10 if device.type == "cuda" else 3
    losses = loss_choices()
    if names:
        losses = {k: v for k, v in losses.items() if k in names or k == "ce"}
    ce = losses["ce"]
    results: dict[str, dict] = {}
    for c in classes:
        g = torch.Generator().manual_seed(c)
        ce_logits, ce_target, _ = make_inputs(ce, batch, c, device, g)
        for name, loss in losses.items():
            if isinstance(loss, Exception):
                results.setdefault(name, {})[c] = f"n/a ({type(loss).__name__}: {str(loss).splitlines()[0][:60]})"
                continue
            cell = results.setdefault(name, {}).setdefault(c, {})
            try:
                loss = loss.to(device)
                # The same generator seed: the same logit values as CE's (and the same labels
                # for losses on class indices).
                logits, target, aux = make_inputs(loss, batch, c, device, torch.Generator().manual_seed(c))
                for mode in modes:
                    with fused.mode_as(mode):
                        before = dict(fused.counts)
                        for _ in range(2):  # warm-up: compilation, allocator, first-call dispatch
                            time_loss(loss, logits, target, aux, 1, sync)
                            time_loss(ce, ce_logits, ce_target, {}, 1, sync)
                        path = path_taken(before, fused.counts)
                        ratios, secs, ce_secs = [], [], []
                        for _ in range(repeats):
                            s = time_loss(loss, logits, target, aux, inner, sync)
                            s_ce = time_loss(ce, ce_logits, ce_target, {}, inner, sync)
                            ratios.append(s / s_ce)
                            secs.append(s)
                            ce_secs.append(s_ce)
                    cell[mode] = {"ratio": median(ratios), "ms": 1e3 * median(secs), "ce_ms": 1e3 * median(ce_secs),
                                  "path": path}
            except Exception as exc:
                results[name][c] = f"error ({type(exc).__name__}: {str(exc).splitlines()[0][:60]})"
    return results


def target_for(name: str) -> float:
    return TARGET_TWO_HEAD if name == "two_head" else TARGET


def render(results: dict, classes, device: str) -> tuple[str, list[str]]:
    """A markdown table (default path's ratio, its time and path; the eager path's ratio beside it)
    and the losses over target on the default path."""
    rows, missed = [], []
    for name in sorted(results, key=lambda n: (n != "ce", n)):
        cells = []
        worst = 0.0
        for c in classes:
            r = results[name].get(c)
            if isinstance(r, dict) and "auto" in r:
                a = r["auto"]
                eager = f"; eager {r['off']['ratio']:.2f}x" if "off" in r and a["path"] != r["off"]["path"] else ""
                cells.append(f"{a['ratio']:.2f}x ({a['ms']:.2f} ms, {a['path']}{eager})")
                worst = max(worst, a["ratio"])
            else:
                cells.append(str(r))
                worst = float("inf")
        ok = worst <= target_for(name)
        if not ok:
            missed.append(name)
        rows.append([f"`{name}`", *cells, f"<= {target_for(name)}x", "**met**" if ok else "**missed**"])
    header = ["loss", *(f"C = {c}" for c in classes), "target", f"{device}"]
    return table(header, rows), missed


def describe(device: str, batch: int, repeats: int) -> str:
    where = "CPU, one thread" if device == "cpu" else "GPU"
    return (f"**{where}**, B = {batch}, forward + backward, ratio to `ce` (median of {repeats} paired repeats, each "
            "the fastest of a few calls), on the default path (`kernel`: the loss's hand-written CPU kernel, "
            "losses/cpu_kernels.cpp; `compiled`: its closed-form row function compiled by `torch.compile`; "
            "`eager`: the same row function as tensor ops; `plain torch`: a loss with no row function), see "
            "losses/fused.py; where the default is not eager, the eager path's ratio follows:")


def run(repeats: int = 11, quick: bool = False, gpu: bool = False) -> Section:
    import torch

    classes = (30,) if quick else CLASSES
    batch = 256 if quick else B
    parts, data, verdicts = [], {}, []
    threads = torch.get_num_threads()
    for device in ["cpu"] + (["cuda"] if gpu else []):
        # One CPU thread: the ratio is one of work, free of OpenMP barrier stalls when other
        # processes share the cores (they made 2-thread timings swing 100x here).
        torch.set_num_threads(1 if device == "cpu" else threads)
        try:
            results = measure(device, repeats, classes, batch)
        finally:
            torch.set_num_threads(threads)
        data[device] = results
        md, missed = render(results, classes, device)
        parts += [describe(device, batch, repeats), "", md, ""]
        n = len(results)
        verdicts.append((f"loss cost, {device} ({n} losses)", f"{n - len(missed)} of {n} within target",
                         f"<= {TARGET}x ce (two_head {TARGET_TWO_HEAD}x)", not missed))
        if missed:
            parts.append(f"Over target on {device}: {', '.join(f'`{m}`' for m in missed)}.")
            parts.append("")
    if not gpu:
        parts += ["<!-- device:loss -->", "**GPU**: not measured in this session (no CUDA device); "
                  "`benchmarks/device_run.sh` measures it and `benchmarks/fold_device.py` puts it here.",
                  "<!-- /device:loss -->"]
    data["verdicts"] = verdicts
    return Section("Loss cost", "\n".join(parts), data)
