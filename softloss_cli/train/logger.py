"""Where a run's numbers go: TensorBoard events, ``history.jsonl`` and the console.

TensorBoard is imported only when a run starts (it is slow to import). On resume the
writer purges events past the resumed step and ``history.jsonl`` drops the epochs that
will be trained again, so curves never hold two copies of an epoch.

What a run's TensorBoard directory (``<run>/tb``) holds:

- scalars ``train/*`` (loss, lr, loss parts every ``log_every`` steps; epoch loss and
  throughput per epoch), ``val/*`` (every validation metric per epoch), ``test/*`` (the
  final test metrics, at the last step) and ``final/{val,test,train}/*``: the numbers of
  ``metrics.json`` (best checkpoint), which the HPARAMS tab reads;
- a custom-scalars layout (tab CUSTOM SCALARS): one chart per headline metric with its
  ``train``/``val``/``test`` series together, plus the training loss and learning rate;
- the HPARAMS tab's summaries written by this run's own writer, so the tab lists the run
  itself (not the sub-run that ``SummaryWriter.add_hparams`` creates) with its
  hyper-parameters and final metrics (``RunLogger.hparams``; a sweep adds the union of its
  jobs' columns in ``<sweep>/hparams``);
- the resolved config as text and, at the end, the figures registered for the task
  (``test/reliability``, ``test/confusion_matrix``...), also saved as ``plots/test_<name>.png``.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path

#: overrides that are not hyper-parameters (where the run was written, how it was shown).
_NOT_HPARAMS = re.compile(r"^(hydra\..*|hydra/.*|paths\..*|trainer\.(progress|log_every|threads|resume))$")


class RunLogger:
    """TensorBoard + ``history.jsonl`` for one run directory (rank 0 only)."""

    def __init__(self, run_dir: Path, config_yaml: str, resume_step: int | None = None, start_epoch: int = 0,
                 data_name: str | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.data_name = data_name  # a scenario dataset has its own headline charts
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)
        self.history_path = run_dir / "history.jsonl"
        self._layout_written = False
        if start_epoch > 0 and self.history_path.exists():
            kept = [line for line in self.history_path.read_text().splitlines()
                    if line.strip() and json.loads(line)["epoch"] < start_epoch]
            self.history_path.write_text("".join(line + "\n" for line in kept))
        elif self.history_path.exists():
            self.history_path.unlink()
        if resume_step is None:
            self.writer.add_text("config", "```yaml\n" + config_yaml + "\n```", 0)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(name, value, step)

    def epoch(self, epoch: int, step: int, values: dict[str, float]) -> None:
        """Per-epoch numbers to TensorBoard and one line of ``history.jsonl``."""
        self.scalars(values, step)
        if not self._layout_written:
            # Written as soon as the validation metric names are known, so a run in progress
            # already has its charts; the same layout of every run is merged by TensorBoard.
            self.writer._get_file_writer().add_summary(_custom_scalars(scalars_layout(values, self.data_name)))
            self._layout_written = True
        record = {"epoch": epoch, "step": step, "time": time.time(), **values}
        with self.history_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.writer.flush()

    def finish(self, cfg, metrics: dict[str, float], outputs: dict, task, step: int) -> None:
        """End of the run: final metrics, HPARAMS, figures (test split) and ``task.json``.

        ``metrics`` are ``metrics.json``'s numbers. ``val/*`` already has its per-epoch curve,
        so the final (best checkpoint) values go only to ``final/val/*``: a second point at
        the last step would make the curve jump back to the best epoch. Test (and partial
        tasks' train) metrics go to ``test/*`` and ``final/*`` alike.
        """
        from softloss_cli.plots.registry import task_figures

        self.scalars({k: v for k, v in metrics.items() if not k.startswith("val/")}, step)
        self.scalars({f"final/{k}": v for k, v in metrics.items()}, step)
        self.hparams(cfg, metrics)
        figures = task_figures(outputs["test"], task)
        if figures:
            plots = self.run_dir / "plots"
            plots.mkdir(parents=True, exist_ok=True)
            for name, fig in figures.items():
                # Drawn once for both the PNG file and TensorBoard (savefig + add_figure would draw twice).
                image = render_figure(fig)
                _save_png(image, plots / f"test_{name}.png")
                self.writer.add_image(f"test/{name}", image, step, dataformats="HWC")
        write_task(self.run_dir / "task.json", task)
        self.writer.flush()

    def hparams(self, cfg, metrics: dict[str, float]) -> None:
        """The HPARAMS tab's summaries, in this run, and ``hparams.json`` beside them.

        Hyper-parameters: see ``hparam_values``; metrics: every ``final/*`` scalar (the
        values the tab shows are read from those scalars of the same run). A single run
        writes all three summaries (experiment, session start, session end). A sweep job
        writes only its session start and end: TensorBoard takes the tab's columns from
        *one* experiment summary, and one job's would drop the knobs of another job's loss;
        the sweep writes the union of its jobs' columns when it ends (``write_sweep_hparams``),
        and until then TensorBoard builds the columns from every job's session.
        """
        from torch.utils.tensorboard.summary import hparams

        values = hparam_values(cfg, _run_overrides(self.run_dir), _run_choices())
        metric_tags = {f"final/{k}": v for k, v in metrics.items() if v is not None and math.isfinite(v)}
        experiment, session_start, session_end = hparams(values, metric_tags)
        summaries = [session_start, session_end] if _in_multirun() else [experiment, session_start, session_end]
        writer = self.writer._get_file_writer()
        for summary in summaries:
            writer.add_summary(summary)
        _write_json(self.run_dir / HPARAMS_FILE, {"hparams": values, "metrics": sorted(metric_tags)})

    def close(self) -> None:
        self.writer.close()


# --------------------------------------------------------------------------- layout and hparams


def scalars_layout(values: dict[str, float], data_name: str | None = None) -> dict:
    """Custom-scalars layout for a run whose per-epoch values are ``values``.

    Category "headline": for each headline metric of the dataset (``tasks.DATA_HEADLINE``,
    e.g. the routing metrics of ``routing_images``) or else of the task kind
    (``tasks.HEADLINE``, the kind inferred from the metric names) that the run validates, one multiline chart
    of ``train/``, ``val/`` and ``test/`` (tags are regular expressions). Category
    "training": the step and epoch losses, the learning rate and the throughput.
    """
    from softloss_cli.tasks import headline_metrics, infer_kind

    names = [n for n in values if n.startswith("val/")]
    bare = {n.split("/", 1)[1] for n in names}
    wanted = [m for m in headline_metrics(infer_kind(names), data_name) if m in bare]
    wanted = wanted or sorted(bare)[:4]
    headline = {m: ["Multiline", [rf"^(train|val|test)/{re.escape(m)}$"]] for m in wanted}
    training = {
        "loss": ["Multiline", [r"^train/(loss|epoch_loss)$"]],
        "learning rate": ["Multiline", [r"^train/lr$"]],
        "images per second": ["Multiline", [r"^train/images_per_s$"]],
    }
    return {"headline (train / val / test)": headline, "training": training}


def _custom_scalars(layout: dict):
    from torch.utils.tensorboard.summary import custom_scalars

    return custom_scalars(layout)


def hparam_values(cfg, overrides: list[str], choices: dict | None = None) -> dict[str, float | str]:
    """The run's hyper-parameters as TensorBoard accepts them (numbers or strings).

    The same keys for every run, so that the runs of a sweep share the tab's columns:
    the group choices (``data``, ``model``, ``loss``, ``optim``, ``sched``), ``seed``,
    ``optim.lr``, ``optim.weight_decay``, ``data.batch_size``, ``trainer.epochs``,
    ``trainer.precision`` and every scalar ``loss.*`` knob; then every override of the
    command line (``key=value``, Hydra's and ``paths.*`` left out). Numbers stay numbers;
    None, booleans and lists become strings (``null``, ``true``, ``[32, 64]``).
    """
    from omegaconf import OmegaConf

    choices = dict(choices or {})
    container = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg
    values: dict[str, float | str] = {}

    def target_name(node) -> str:
        target = (node or {}).get("_target_", "") if isinstance(node, dict) else ""
        return str(target).rsplit(".", 1)[-1] or "-"

    for group in ("data", "model", "loss", "optim", "sched"):
        node = container.get(group)
        fallback = node.get("name") if group == "data" and isinstance(node, dict) and "name" in node else target_name(node)
        values[group] = _hparam(choices.get(group) or fallback)
    values["seed"] = _hparam(container.get("seed"))
    for path in ("optim.lr", "optim.weight_decay", "data.batch_size", "trainer.epochs", "trainer.precision"):
        node = container
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            values[path] = _hparam(node)
    for key, value in (container.get("loss") or {}).items():
        if key != "_target_" and not isinstance(value, (dict, list)):
            values[f"loss.{key}"] = _hparam(value)
    for item in overrides:
        key, sep, raw = str(item).partition("=")
        key = key.lstrip("+~")
        if sep and not _NOT_HPARAMS.match(key) and key not in values:
            values[key] = _hparam(raw, parse=True)
    return values


#: a run's hyper-parameters and final metric tags as its HPARAMS summaries hold them.
HPARAMS_FILE = "hparams.json"


def write_sweep_hparams(sweep_dir: Path, run_dirs: list[Path]) -> Path | None:
    """The HPARAMS experiment summary of a sweep: ``<sweep_dir>/hparams/events...``.

    Its columns are the union of its jobs' hyper-parameters (``hparams.json``; a string
    parameter lists every value the jobs took, so the tab can filter on it) and of their
    ``final/*`` metrics, so a sweep over losses shows every loss's knobs. TensorBoard opened
    on the sweep reads this summary; with other experiment summaries under the same logdir
    (other sweeps, single runs) it picks one of them. Returns the directory written, or None
    when no job finished.
    """
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    values: dict[str, float | str] = {}
    domains: dict[str, list] = {}
    metric_tags: dict[str, float] = {}
    for run_dir in run_dirs:
        path = Path(run_dir) / HPARAMS_FILE
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        for key, value in record["hparams"].items():
            values.setdefault(key, value)
            if isinstance(values[key], str) and isinstance(value, str) and value not in domains.setdefault(key, []):
                domains[key].append(value)
        metric_tags.update(dict.fromkeys(record["metrics"], 0.0))
    if not values:
        return None
    # A key that is a number in one job and a string in another ("null") becomes a string column.
    strings = {k for k in values if isinstance(values[k], str)}
    domains = {k: sorted(v) for k, v in domains.items() if k in strings}
    experiment, _, _ = hparams(values, dict(sorted(metric_tags.items())), hparam_domain_discrete=domains)
    out = Path(sweep_dir) / "hparams"
    writer = SummaryWriter(str(out))
    writer._get_file_writer().add_summary(experiment)
    writer.close()
    return out


def render_figure(fig, dpi: int = 100):
    """A matplotlib figure as an RGB ``uint8`` array ``[H, W, 3]`` (drawn once), then closed."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig.set_dpi(dpi)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def _save_png(image, path: Path) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, optimize=False)


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except ImportError:  # pragma: no cover - hydra is a dependency
        return False


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


def _hparam(value, parse: bool = False) -> float | str:
    if parse:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return str(value)
        return number if math.isfinite(number) else str(value)
    if isinstance(value, bool) or value is None:
        return "null" if value is None else str(value).lower()
    if isinstance(value, (int, float)):
        return float(value)
    return str(value)


def _run_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides of the running job (Hydra's), or of ``.hydra/overrides.yaml``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return list(HydraConfig.get().overrides.task)
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    path = run_dir / ".hydra" / "overrides.yaml"
    if path.exists():
        import yaml

        return list(yaml.safe_load(path.read_text()) or [])
    return []


def _run_choices() -> dict:
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return {k: v for k, v in HydraConfig.get().runtime.choices.items() if v is not None}
    except ImportError:  # pragma: no cover
        pass
    return {}


def write_task(path: Path, task) -> None:
    """``task.json``: the task the run trained on (read by ``softloss report``), and the CPU
    thread count it ran with (``softloss eval`` reuses it: float reductions split over another
    number of threads round differently, so a sweep job trained with one thread per worker
    would not be reproduced to the last digit with two)."""
    import torch

    record = {"kind": task.kind, "eval_kind": task.eval_kind, "num_classes": task.num_classes,
              "class_names": list(task.class_names),
              "label_values": list(task.label_values) if task.label_values is not None else None,
              "torch_threads": torch.get_num_threads()}
    _write_json(path, record)


PROGRESS_MODES = ("auto", "rich", "plain", "none")


class Progress:
    """A rich progress bar per epoch on a terminal, plain lines otherwise (or nothing)."""

    def __init__(self, mode: str = "auto"):
        if mode not in PROGRESS_MODES:
            raise ValueError(f"trainer.progress must be one of {', '.join(PROGRESS_MODES)}, got {mode!r}")
        if mode == "auto":
            mode = "rich" if sys.stdout.isatty() else "plain"
        self.mode = mode
        self._bar = None

    def start_epoch(self, epoch: int, num_epochs: int, steps: int) -> None:
        self.t0 = time.perf_counter()
        self.epoch, self.num_epochs = epoch, num_epochs
        if self.mode == "rich":
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn(f"epoch {epoch + 1}/{num_epochs}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True,
                # rich redraws from its own thread; at its default 10/s that thread competes with
                # torch's for the GIL and the cores of a small machine (issue 17, runner cost).
                refresh_per_second=2,
            )
            self._bar.start()
            self._task = self._bar.add_task("train", total=steps, info="")

    def update(self, step_in_epoch: int, loss: float, images_per_s: float) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step_in_epoch, info=f"loss {loss:.4f}  {images_per_s:,.0f} img/s")

    def end_epoch(self, summary: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self.mode == "none":
            return
        shown = "  ".join(f"{k} {v:.4g}" for k, v in summary.items())
        print(f"epoch {self.epoch + 1}/{self.num_epochs}  {shown}  ({time.perf_counter() - self.t0:.1f}s)", flush=True)
