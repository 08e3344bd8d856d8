"""``softloss eval RUN_DIR``: evaluate a run's checkpoint again, on its own data or on other data.

Rebuilds the data, loss and model from the run's saved config (``.hydra/config.yaml``)
with the trainer's own functions (``train/loop.py``: ``build_setup``, ``make_loader``,
``evaluate``), loads ``checkpoints/{best,last}.pt`` and prints the metrics. With no
overrides and the run's own checkpoint choice (``eval.checkpoint``, best by default) it
reproduces ``metrics.json`` exactly: same data, same weights, same order of operations
(on the CPU, bit for bit). Overrides change the data only: ``data=<choice>`` swaps the
dataset for another of the same task and number of classes (e.g. an ImageFolder of the
same classes), ``data.<key>=<value>`` edits it, ``paths.data_root=...`` points to moved
data, ``trainer.device``/``trainer.precision`` choose where and how to run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from softloss_cli.config.argparsing import command_parser
from softloss_cli.errors import SoftlossError

#: keys an eval override may set: the data, where data lives, and where/how the model runs.
_ALLOWED = ("data", "paths", "trainer.device", "trainer.precision", "trainer.threads", "trainer.channels_last")


def _parser() -> argparse.ArgumentParser:
    p = command_parser(
        "eval",
        "Evaluate a run's checkpoint again and print its metrics. Without overrides the numbers "
        "are those of the run's metrics.json; data overrides evaluate it on other data of the same task.",
        ["softloss eval runs/ordinal_images-rps/2026-11-22_17-03-11",
         "softloss eval RUN --checkpoint last --split test --json",
         "softloss eval RUN data=image_folder data.root=/data/my_images data.image_size=32"],
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holds .hydra/ and checkpoints/)")
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                   help="data=<choice>, data.<key>=<value>, paths.data_root=<dir>, trainer.device=cpu|cuda|auto, "
                        "trainer.precision=...")
    p.add_argument("--checkpoint", choices=("best", "last"),
                   help="which checkpoint (default: the run's eval.checkpoint, i.e. the one metrics.json used)")
    p.add_argument("--split", choices=("val", "test"),
                   help="only this split (test still scores val first: some metrics choose a threshold on it); "
                        "default: val and test, as in metrics.json")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object instead of a table")
    p.add_argument("--output", metavar="FILE", help="also write the metrics to this JSON file")
    return p


def load_run_config(run_dir: Path):
    """The run's saved config, with Hydra's runtime values available to interpolations
    and relative data paths made relative to the directory the run was started from."""
    from omegaconf import OmegaConf

    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise SoftlossError(f"{run_dir} is not a run directory: {config_file} does not exist")
    cfg = OmegaConf.load(config_file)
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    cwd = None
    if hydra_file.is_file():
        hydra_cfg = OmegaConf.load(hydra_file)
        cwd = OmegaConf.select(hydra_cfg, "hydra.runtime.cwd", default=None)
        _set_hydra_config(hydra_cfg)
    return cfg, cwd


def _set_hydra_config(hydra_cfg) -> None:
    """Let ``${hydra:...}`` interpolations of a saved config resolve against the run's own
    Hydra values (as they did during training). Best effort: a hydra.yaml that does not fit
    this Hydra's schema only leaves such interpolations unresolvable."""
    from hydra.conf import HydraConf
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import setup_globals
    from omegaconf import OmegaConf

    setup_globals()
    try:
        merged = OmegaConf.merge({"hydra": OmegaConf.structured(HydraConf)}, {"hydra": hydra_cfg.hydra})
        HydraConfig.instance().set_config(merged)
    except Exception:  # noqa: BLE001 - schema drift between Hydra versions
        pass


def _relative_to_run_cwd(value, cwd) -> str:
    """A relative path as the training run saw it (it ran in ``cwd``) when it exists there;
    otherwise unchanged (relative to the current directory)."""
    if value is None or cwd is None or os.path.isabs(str(value)):
        return value
    candidate = os.path.join(cwd, str(value))
    return candidate if os.path.exists(candidate) else value


def apply_overrides(cfg, overrides: list[str], cwd=None):
    """Apply ``data=...``, ``data.*``, ``paths.*`` and ``trainer.device/precision`` overrides."""
    from omegaconf import OmegaConf, open_dict

    from softloss_cli.config import catalog

    choice = [o for o in overrides if o.split("=", 1)[0] == "data"]
    dotted = [o for o in overrides if o not in choice]
    for item in overrides:
        key, sep, _ = item.partition("=")
        key = key.lstrip("+")
        if not sep:
            raise SoftlossError(f"eval: '{item}' is not an override (key=value) or a run directory")
        if not any(key == a or key.startswith(a + ".") for a in _ALLOWED):
            raise SoftlossError(f"eval: cannot override '{key}': eval takes data=..., data.*, paths.*, "
                                "trainer.device and trainer.precision (the model and loss are the run's)")
    if len(choice) > 1:
        raise SoftlossError("eval: data=... given twice")
    if choice:
        name = choice[0].split("=", 1)[1]
        if name not in catalog.choices("data"):
            raise SoftlossError(f"unknown data '{name}'; choose one of: {', '.join(catalog.choices('data'))}")
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(catalog.CONFIG_DIR), version_base="1.3"):
            fresh = compose("train", overrides=[f"data={name}"])
        GlobalHydra.instance().clear()
        with open_dict(cfg):
            cfg.data = fresh.data
    elif cwd is not None:
        # Paths of the run's own data, relative to where it was trained.
        with open_dict(cfg):
            for key in ("root", "path"):  # image_folder's folder, manifest's file
                if cfg.data.get(key) is not None:
                    cfg.data[key] = _relative_to_run_cwd(cfg.data[key], cwd)
    for item in dotted:
        key, _, value = item.partition("=")
        add = key.startswith("+")
        key = key.lstrip("+")
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if node is None or (not add and leaf not in node):
            keys = ", ".join(sorted(str(k) for k in node.keys())) if node is not None else ""
            raise SoftlossError(f"unknown config key '{key}'" + (f"; keys under {parent}: {keys}" if keys else "")
                                + f" (add it with +{key}=... if the dataset takes it)")
        parsed = OmegaConf.from_dotlist([f"v={value}"]).v
        with open_dict(cfg):
            OmegaConf.update(cfg, key, parsed, merge=False)
    if not any(o.startswith(("paths.data_root=", "+paths.data_root=")) for o in overrides):
        try:
            root = cfg.paths.data_root
        except Exception:  # an unresolvable interpolation: let the builder report it
            root = None
        if root is not None:
            with open_dict(cfg):
                cfg.paths.data_root = _relative_to_run_cwd(root, cwd)
    return cfg


def evaluate_run(run_dir: Path, overrides: list[str] | None = None, checkpoint: str | None = None,
                 split: str | None = None) -> dict[str, float]:
    """Metrics ``{split}/{name}`` of a run's checkpoint, computed as ``final_evaluation`` does."""
    run_dir = Path(run_dir)
    cfg, cwd = load_run_config(run_dir)
    cfg = apply_overrides(cfg, list(overrides or []), cwd)
    which = checkpoint or cfg.get("eval", {}).get("checkpoint", "best")
    path = run_dir / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        present = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.pt"))
        raise SoftlossError(f"{path} does not exist" + (f"; this run has: {', '.join(present)}" if present else
                                                         " (the run stopped before its first checkpoint)"))
    # Imported once the arguments are known to be good: bad input answers without torch's start-up.
    import torch

    from softloss_cli.train import checkpoint as ckpt
    from softloss_cli.train.loop import build_setup, evaluate, make_loader, partial_train_metrics
    from softloss_cli.train.precision import Precision, resolve_device, resolve_precision

    t = cfg.trainer
    # The same set-up as fit(): threads, device, precision, seeds (a builder may draw from them).
    threads = t.get("threads") or _trained_threads(run_dir)
    if threads:
        torch.set_num_threads(int(threads))
    device = resolve_device(t.device)
    precision = Precision(resolve_precision(t.precision, device), device)
    ckpt.seed_everything(cfg.seed)
    data, loss_fn, model = build_setup(cfg, device)
    task = data.task
    channels_last = (t.channels_last == "auto" and device.type == "cuda" and len(data.input_shape) == 3) or t.channels_last is True
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    state = ckpt.load(path, map_location=device)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        shapes = _shape_mismatch(state["model"], model.state_dict())
        raise SoftlossError(f"{path} does not fit the model built for data={cfg.data.name} "
                            f"({task.num_classes} classes, input {list(data.input_shape)}): {shapes or exc}") from None

    metrics: dict[str, float] = {}
    val_metrics, val_out = evaluate(model, make_loader(cfg, data, "val", device), loss_fn, precision, "val", task,
                                    channels_last)
    if split in (None, "val"):
        metrics.update(val_metrics)
    if split in (None, "test"):
        test_metrics, _ = evaluate(model, make_loader(cfg, data, "test", device), loss_fn, precision, "test", task,
                                   channels_last, reference=val_out)
        metrics.update(test_metrics)
    if split is None and task.kind == "partial":  # as final_evaluation
        metrics.update(partial_train_metrics(cfg, data, model, loss_fn, precision, channels_last, device,
                                             path.with_name("last.pt"), which))
    return metrics


def _trained_threads(run_dir: Path) -> int | None:
    """The CPU thread count the run trained with (``task.json``), or None for older runs."""
    try:
        return int(json.loads((run_dir / "task.json").read_text()).get("torch_threads") or 0) or None
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _shape_mismatch(saved: dict, built: dict) -> str:
    for name, tensor in saved.items():
        if name in built and tuple(built[name].shape) != tuple(tensor.shape):
            return f"{name} is {list(tensor.shape)} in the checkpoint but {list(built[name].shape)} here"
    return ""


def compare(metrics: dict[str, float], reference: dict[str, float]) -> tuple[list[str], list[str], list[str]]:
    """``(differ, new, missing)``: names present in both whose values differ (NaN equals NaN),
    names only in ``metrics`` (metric groups added since the run) and names only in ``reference``."""
    differ = []
    for name in metrics.keys() & reference.keys():
        value, ref = metrics[name], reference[name]
        if not (value == ref or (math.isnan(value) and math.isnan(ref))):
            differ.append(name)
    return sorted(differ), sorted(metrics.keys() - reference.keys()), sorted(reference.keys() - metrics.keys())


def main(args: list[str]) -> int:
    # Intermixed: overrides may come before or after --checkpoint/--split, as users type them.
    opts = _parser().parse_intermixed_args(args)
    run_dir = Path(opts.run_dir)
    if not run_dir.is_dir():
        raise SoftlossError(f"{run_dir} does not exist: pass a run directory (e.g. runs/<data>-<loss>/<date>_<time>)")
    metrics = evaluate_run(run_dir, opts.overrides, opts.checkpoint, opts.split)
    if opts.output:
        Path(opts.output).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if opts.json:
        print(json.dumps(metrics, sort_keys=True))
        return 0
    _print_table(metrics, run_dir, opts)
    return 0


def _print_table(metrics: dict[str, float], run_dir: Path, opts) -> None:
    from rich.table import Table

    from softloss_cli.progress import console as plain_console

    console = plain_console()  # off a terminal: no wrapped lines
    saved = {}
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        saved = json.loads(metrics_file.read_text())
    splits = [s for s in ("train", "val", "test") if any(k.startswith(f"{s}/") for k in metrics)]
    names = sorted({k.split("/", 1)[1] for k in metrics})
    which = opts.checkpoint or "the run's"
    table = Table(title=f"eval of {run_dir} ({which} checkpoint)", title_justify="left")
    table.add_column("metric")
    for s in splits:
        table.add_column(s, justify="right")
    for name in names:
        table.add_row(name, *(f"{metrics[f'{s}/{name}']:.4f}" if f"{s}/{name}" in metrics else "-" for s in splits))
    console.print(table)
    if saved and not opts.overrides:
        differ, new, missing = compare(metrics, saved)
        if opts.split:
            missing = [m for m in missing if m.startswith(f"{opts.split}/")]
        same = len(metrics) - len(differ) - len(new)
        if not differ:
            console.print(f"{same} metrics identical to {metrics_file}", highlight=False)
        else:
            console.print(f"{len(differ)} metric(s) differ from {metrics_file} (another checkpoint or device "
                          f"than the run's?): {', '.join(differ[:8])}", highlight=False)
        if new:
            console.print(f"{len(new)} metric(s) not in {metrics_file.name} (added to softloss since the run)",
                          highlight=False)
