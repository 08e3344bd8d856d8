"""Where a run's numbers go: TensorBoard events, ``history.jsonl`` and the console.

TensorBoard is imported only when a run starts (it is slow to import). On resume the
writer purges events past the resumed step and ``history.jsonl`` drops the epochs that
will be trained again, so curves never hold two copies of an epoch.

Where the events go: ``<run>/tb`` for a single run; ``<job>/tb/<overrides>`` for a sweep
job, e.g. ``3/tb/loss=rps,seed=1`` (``job_name``: the overrides the sweep varies), because
TensorBoard names a run by its folder: every tab's run selector then says what each run is.

What a run's event folder holds, in the order TensorBoard's tabs list the groups:

- ``headline/*``: the task's headline metrics (``tasks.headline_metrics``) per epoch on
  validation (``headline/val_mae``...) and the epoch's training loss (``headline/train_loss``):
  the first charts TIME SERIES and SCALARS show;
- ``summary/*``: the final headline numbers of ``metrics.json`` (``summary/test_mae``,
  ``summary/val_mae`` at the checkpoint ``eval.checkpoint`` names), one point each, which the
  HPARAMS tab reads (every metric is in ``metrics.json`` and ``softloss report``);
- ``train/*`` (loss, lr, loss parts every ``log_every`` steps; epoch loss and throughput per
  epoch) and ``val/*`` (every validation metric per epoch);
- a custom-scalars layout (tab CUSTOM SCALARS): one chart per headline metric with its
  validation curve and its final val/test points, plus the training loss and learning rate;
- the HPARAMS summaries (``RunLogger.hparams``): a single run's own columns; a sweep job's
  session only, the sweep's columns being written into every finished job when it ends
  (``write_sweep_hparams``: the hyper-parameters that vary between its jobs);
- the resolved config as text and, at the end, the figures registered for the task
  (``test/reliability``, ``test/confusion_matrix``...), also saved as ``plots/test_<name>.png``.
"""

from __future__ import annotations

import json
import math
import re
import struct
import sys
import time
from pathlib import Path

from softloss_cli.progress import say

#: overrides that are not hyper-parameters (where the run was written, how it was shown).
_NOT_HPARAMS = re.compile(r"^(hydra\..*|hydra/.*|paths\..*|trainer\.(progress|log_every|threads|resume))$")


class RunLogger:
    """TensorBoard + ``history.jsonl`` for one run directory (rank 0 only)."""

    def __init__(self, run_dir: Path, config_yaml: str, resume_step: int | None = None, start_epoch: int = 0,
                 data_name: str | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.data_name = data_name  # a scenario dataset has its own headline charts
        self.tb_dir = event_dir(run_dir, job_name() if _in_multirun() else None)
        self.writer = SummaryWriter(str(self.tb_dir), purge_step=resume_step)
        self._headline: list[str] | None = None
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
        """Per-epoch numbers to TensorBoard (plus their ``headline/*`` copies) and one line of ``history.jsonl``."""
        if self._headline is None:
            self._headline = run_headline(values, self.data_name)
        self.scalars(values, step)
        self.scalars(headline_scalars(values, self._headline), step)
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
        """End of the run: final headline numbers, HPARAMS, figures (test split) and ``task.json``.

        ``metrics`` are ``metrics.json``'s numbers. Only the headline ones become scalars
        (``summary/<split>_<name>``, one point at the last step, read by HPARAMS): forty
        single-point charts tell a reader nothing that ``softloss report`` does not. The
        validation curves are not extended: a point at the last step holding the best
        checkpoint's value would make a curve jump back to the best epoch.
        """
        from softloss_cli.plots.registry import task_figures

        self.scalars(summary_scalars(metrics, headline_metrics_of(metrics, task.kind, self.data_name)), step)
        self.hparams(cfg, metrics, task.kind)
        figures = task_figures(outputs["test"], task)
        if figures:
            plots = self.run_dir / "plots"
            plots.mkdir(parents=True, exist_ok=True)
            for name, fig in figures.items():
                # Drawn and PNG-encoded once: the same bytes are the file and the TensorBoard
                # image (savefig + add_figure would draw twice; add_image would decode and
                # encode again).
                png = render_figure(fig)
                (plots / f"test_{name}.png").write_bytes(png)
                self.writer._get_file_writer().add_summary(_png_summary(f"test/{name}", png), step)
        write_task(self.run_dir / "task.json", task)
        self.writer.flush()

    def hparams(self, cfg, metrics: dict[str, float], kind: str | None = None) -> None:
        """The HPARAMS tab's summaries, in this run, and ``hparams.json`` beside them.

        Hyper-parameters: see ``hparam_values`` (all of them in the session, so the tab can
        filter on any); the columns (the experiment summary) are the run's defining ones
        (``defining_keys``: group choices, seed, command-line overrides). Metrics: the
        ``summary/*`` scalars, headline first. A sweep job writes only its session start and
        end: the sweep writes the columns into every finished job when it ends
        (``write_sweep_hparams``), and until then TensorBoard builds them from the sessions.
        """
        from torch.utils.tensorboard.summary import hparams

        overrides = _run_overrides(self.run_dir)
        values = hparam_values(cfg, overrides, _run_choices())
        defining = defining_keys(values, overrides)
        names = headline_metrics_of(metrics, kind or "", self.data_name)
        metric_tags = {tag: v for tag, v in summary_scalars(metrics, names).items() if math.isfinite(v)}
        _, session_start, session_end = hparams(values, metric_tags)
        writer = self.writer._get_file_writer()
        if not _in_multirun():
            writer.add_summary(_experiment({k: values[k] for k in defining}, list(metric_tags)))
        for summary in (session_start, session_end):
            writer.add_summary(summary)
        _write_json(self.run_dir / HPARAMS_FILE, {"hparams": values, "defining": defining,
                                                  "metrics": list(metric_tags),
                                                  "tb": self.tb_dir.relative_to(self.run_dir).as_posix()})

    def close(self) -> None:
        self.writer.close()


# --------------------------------------------------------------------------- layout and hparams


def run_headline(values, data_name: str | None = None) -> list[str]:
    """Bare names of the headline metrics a run validates, in the task's order (the first
    four validation metrics when the task names none of them)."""
    from softloss_cli.tasks import headline_metrics, infer_kind

    names = [n for n in values if n.startswith("val/")]
    bare = {n.split("/", 1)[1] for n in names}
    wanted = [m for m in headline_metrics(infer_kind(names), data_name) if m in bare]
    return wanted or sorted(bare)[:4]


def headline_metrics_of(metrics, kind: str, data_name: str | None = None) -> list[str]:
    """Bare names of the headline metrics of a finished run's ``metrics`` (any split), in order."""
    from softloss_cli.tasks import headline_metrics, infer_kind

    bare = {n.split("/", 1)[1] for n in metrics if "/" in n}
    wanted = [m for m in headline_metrics(kind or infer_kind(metrics), data_name) if m in bare]
    return wanted or sorted(b for b in bare if f"val/{b}" in metrics)[:4]


def headline_scalars(values: dict[str, float], names: list[str]) -> dict[str, float]:
    """``headline/val_<name>`` for each headline name, and ``headline/train_loss`` (the epoch's mean loss)."""
    out = {f"headline/val_{m}": values[f"val/{m}"] for m in names if f"val/{m}" in values}
    if "train/epoch_loss" in values:
        out["headline/train_loss"] = values["train/epoch_loss"]
    return out


def summary_scalars(metrics: dict[str, float], names: list[str]) -> dict[str, float]:
    """``summary/<split>_<name>`` for the headline ``names``: test first, then val, then train
    (a partial task's training-split metrics); the tag order is the HPARAMS columns' order."""
    out = {}
    for split in ("test", "val", "train"):
        for m in names:
            value = metrics.get(f"{split}/{m}")
            if value is not None:
                out[f"summary/{split}_{m}"] = value
    return out


def scalars_layout(values: dict[str, float], data_name: str | None = None) -> dict:
    """Custom-scalars layout for a run whose per-epoch values are ``values``.

    Category "headline": for each headline metric of the dataset (``tasks.DATA_HEADLINE``,
    e.g. the routing metrics of ``routing_images``) or else of the task kind
    (``tasks.HEADLINE``, the kind inferred from the metric names) that the run validates,
    one multiline chart of the validation curve and the final val and test points
    (``summary/val_<m>``, ``summary/test_<m>``; tags are regular expressions). Category
    "training": the step and epoch losses, the learning rate and the throughput.
    """
    wanted = run_headline(values, data_name)
    headline = {m: ["Multiline", [rf"^(val/{re.escape(m)}|summary/(val|test)_{re.escape(m)})$"]] for m in wanted}
    training = {
        "loss": ["Multiline", [r"^train/(loss|epoch_loss)$"]],
        "learning rate": ["Multiline", [r"^train/lr$"]],
        "images per second": ["Multiline", [r"^train/images_per_s$"]],
    }
    return {"headline (val per epoch; final val / test)": headline, "training": training}


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


def defining_keys(values: dict, overrides: list[str]) -> list[str]:
    """The hyper-parameters that say what a run is: the group choices, the seed and every
    key of its command line (``hparam_values``' keys, in that order)."""
    keys = ["data", "model", "loss", "optim", "sched", "seed"]
    for item in overrides:
        key, sep, _ = str(item).partition("=")
        keys.append(key.lstrip("+~"))
    return [k for k in dict.fromkeys(keys) if k in values]


def _experiment(values: dict, metric_tags: list[str], domains: dict | None = None):
    """An HPARAMS experiment summary: these columns, these metric tags, in this order."""
    from torch.utils.tensorboard.summary import hparams

    experiment, _, _ = hparams(values, dict.fromkeys(metric_tags, 0.0), hparam_domain_discrete=domains)
    return experiment


#: a run's hyper-parameters and final metric tags as its HPARAMS summaries hold them.
HPARAMS_FILE = "hparams.json"
#: the file-name suffix of the event file a sweep adds to each finished job (its HPARAMS columns).
SWEEP_COLUMNS_SUFFIX = ".sweep_hparams"


def sweep_columns(records: list[dict]) -> tuple[dict, dict, list[str]]:
    """The HPARAMS columns of a sweep from its jobs' ``hparams.json`` records:
    ``(values, domains, metric tags)``.

    Hyper-parameters: those that take two values or more among the jobs that have them (a
    knob only one loss has, at one value, is not a column); with a single job, or when none
    differ, the first job's defining keys. A string
    column lists every value the jobs took (so the tab can filter on it); a key that is a
    number in one job and a string in another becomes a string column. Metrics: the union of
    the jobs' ``summary/*`` tags, in their first job's order (headline first, test before val).
    """
    keys: dict[str, None] = {}
    for record in records:
        keys.update(dict.fromkeys(record["hparams"]))
    varying = [k for k in keys if len({json.dumps(r["hparams"][k]) for r in records if k in r["hparams"]}) > 1]
    if not varying and records:
        varying = list(records[0].get("defining") or records[0]["hparams"])
    values: dict[str, float | str] = {}
    seen: dict[str, list] = {}
    for key in varying:
        taken = [r["hparams"][key] for r in records if key in r["hparams"]]
        if any(isinstance(v, str) for v in taken) and not all(isinstance(v, str) for v in taken):
            taken = [v if isinstance(v, str) else f"{v:g}" for v in taken]
        values[key] = taken[0]
        if isinstance(taken[0], str):
            seen[key] = sorted(set(taken))
    metric_tags: dict[str, None] = {}
    for record in records:
        metric_tags.update(dict.fromkeys(record["metrics"]))
    return values, seen, list(metric_tags)


def write_sweep_hparams(sweep_dir: Path, run_dirs: list[Path]) -> list[Path]:
    """The HPARAMS columns of a sweep (``sweep_columns``), written as one more event file into
    each finished job's event folder (``*.sweep_hparams``).

    Not a folder of its own: TensorBoard would list it as a run in every tab's run selector.
    Every job holds the same columns, so whichever one TensorBoard reads (it reads one
    experiment summary per logdir) describes the whole sweep. Returns the folders written
    (none when no job finished). ``sweep_dir`` is where the jobs live (not written to).
    """
    from torch.utils.tensorboard import SummaryWriter

    found = []
    for run_dir in run_dirs:
        path = Path(run_dir) / HPARAMS_FILE
        if path.is_file():
            record = json.loads(path.read_text())
            folder = Path(run_dir) / record["tb"] if record.get("tb") else event_dir(Path(run_dir))
            found.append((record, folder))
    if not found:
        return []
    values, domains, metric_tags = sweep_columns([record for record, _ in found])
    experiment = _experiment(values, metric_tags, domains)
    written = []
    for _, folder in found:
        for old in folder.glob(f"events.out.tfevents.*{SWEEP_COLUMNS_SUFFIX}"):
            old.unlink()  # a sweep finished again (re-run into its directory): one set of columns
        writer = SummaryWriter(str(folder), filename_suffix=SWEEP_COLUMNS_SUFFIX)
        writer._get_file_writer().add_summary(experiment)
        writer.close()
        written.append(folder)
    return written


# --------------------------------------------------------------------------- where events go


def job_name(overrides: list[str] | None = None, swept: set[str] | None = None) -> str:
    """A sweep job's name for TensorBoard: its overrides of the keys the sweep varies, in
    command-line order (``loss=rps,seed=0``); all its hyper-parameter overrides when the
    swept keys are unknown; ``job<N>`` when it has none. ``/`` in a value becomes ``_``
    (it would nest folders); names past 120 characters are cut and end with the job number.
    """
    num = ""
    if overrides is None or swept is None:
        try:
            from hydra.core.hydra_config import HydraConfig

            hc = HydraConfig.get()
            num = str(hc.job.num)
            overrides = list(hc.overrides.task) if overrides is None else overrides
            swept = _swept_keys(hc) if swept is None else swept
        except (ImportError, ValueError):
            overrides = overrides or []
    items = []
    for item in overrides:
        key, sep, _ = str(item).partition("=")
        key = key.lstrip("+~")
        if sep and not _NOT_HPARAMS.match(key) and (not swept or key in swept):
            items.append(str(item).lstrip("+~"))
    name = ",".join(items).replace("/", "_") or f"job{num}"
    if len(name) > 120:
        name = f"{name[:110]}...job{num}"
    return name


def _swept_keys(hc) -> set[str]:
    """Keys this multirun varies: comma lists, ranges and choices of the sweep's command line
    (``<sweep dir>/multirun.yaml``, written before any job starts) and the sweeper's own
    ``params`` (an experiment preset's grid, an Optuna search space). Empty when unknown."""
    keys = {str(k).lstrip("+~") for k in (hc.sweeper.get("params") or {})}
    path = Path(str(hc.sweep.dir)) / "multirun.yaml"
    if path.is_file():
        import yaml
        from hydra.core.override_parser.overrides_parser import OverridesParser

        try:
            task = (yaml.safe_load(path.read_text()) or {}).get("hydra", {}).get("overrides", {}).get("task") or []
            for o in OverridesParser.create().parse_overrides([str(t) for t in task]):
                if o.is_sweep_override():
                    keys.add(o.get_key_element().lstrip("+~"))
        except Exception:  # noqa: BLE001 - an unreadable file only costs the short name
            pass
    return keys


def event_dir(run_dir: Path, name: str | None = None) -> Path:
    """The folder of a run's event files: ``<run>/tb``, or ``<run>/tb/<name>`` for a sweep job.

    A folder already holding events wins (a resumed sweep job runs as a single run, and must
    go on writing where it started): ``<run>/tb`` itself, or its only sub-folder with events.
    """
    tb = Path(run_dir) / "tb"
    if any(tb.glob("events.out.tfevents.*")):
        return tb
    existing = [d for d in tb.iterdir() if d.is_dir() and any(d.glob("events.out.tfevents.*"))] if tb.is_dir() else []
    if len(existing) == 1:
        return existing[0]
    return tb / name if name else tb


def resolved_yaml(cfg) -> str:
    """The config as YAML with its interpolations resolved (``${oc.env:...}`` -> the value),
    as the TEXT tab shows it; unresolved where a value cannot be resolved here."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_yaml(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - e.g. a resolver only Hydra's launching process has
        return OmegaConf.to_yaml(cfg)


#: widest figure in TensorBoard and ``plots/`` (inches at ``FIGURE_DPI``: 500 px).
#: TensorBoard shows an image at most a card wide (about 330 px in IMAGES, less in TIME
#: SERIES), so a figure drawn 1000 px wide is shrunk until its text cannot be read. Drawn
#: this narrow, with the text at its size in points, it is shrunk little and stays legible.
FIGURE_MAX_WIDTH_IN = 5.0
FIGURE_DPI = 100
#: white margin kept around what is drawn (savefig's ``pad_inches``).
FIGURE_PAD_IN = 0.08


def render_figure(fig, max_width_in: float = FIGURE_MAX_WIDTH_IN, dpi: int = FIGURE_DPI) -> bytes:
    """A matplotlib figure as PNG bytes at ``dpi``, then closed. A figure wider than
    ``max_width_in`` is narrowed to it (its height kept: text keeps its size in points, so it
    grows relative to the plot) and laid out again. The image is cropped to what is drawn
    plus ``FIGURE_PAD_IN`` (what ``bbox_inches="tight"`` gives), so a legend placed outside
    the axes is never cut.

    Drawn once when it can be: a figure whose layout keeps every artist on the canvas (its
    tight bounding box inside the figure, as the layout engines make it) is drawn on the Agg
    canvas and its pixels cropped to the non-white ones. ``savefig(bbox_inches="tight")``
    would draw it twice (a layout pass to measure, then the image). A figure with an artist
    past its edge goes through ``savefig`` all the same: only it can grow the canvas.
    """
    import io

    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    w, h = fig.get_size_inches()
    if w > max_width_in:
        fig.set_size_inches(max_width_in, h)
        if fig.get_layout_engine() is None:
            fig.tight_layout()
    try:
        fig.set_dpi(dpi)
        fig.set_facecolor("white")
        canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
        canvas.draw()
        drawn = fig.get_tightbbox(canvas.get_renderer())
        width, height = fig.get_size_inches()
        slack = 0.5 / dpi  # half a pixel: rounding of the canvas size
        if drawn.x0 < -slack or drawn.y0 < -slack or drawn.x1 > width + slack or drawn.y1 > height + slack:
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", pad_inches=FIGURE_PAD_IN)
            return buffer.getvalue()
        rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    finally:
        plt.close(fig)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(crop_to_ink(rgb, round(FIGURE_PAD_IN * dpi)))).save(buffer, format="png")
    return buffer.getvalue()


def crop_to_ink(rgb, pad: int):
    """``rgb`` ``[H, W, 3]`` cut to the rows and columns holding a non-white pixel, plus
    ``pad`` pixels each side (within the image); an all-white image is returned whole."""
    import numpy as np

    ink = (rgb != 255).any(axis=2)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if not len(rows):
        return rgb
    return rgb[max(rows[0] - pad, 0) : rows[-1] + 1 + pad, max(cols[0] - pad, 0) : cols[-1] + 1 + pad]


#: PNG colour type (IHDR byte 25) -> TensorBoard colour space (channels).
_PNG_COLORSPACE = {0: 1, 4: 2, 2: 3, 6: 4}


def png_header(png: bytes) -> tuple[int, int, int]:
    """``(height, width, channels)`` of a PNG, read from its IHDR chunk (big-endian width
    and height at bytes 16..24, colour type at byte 25); a palette image counts as RGB."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    return height, width, _PNG_COLORSPACE.get(png[25], 3)


def _png_summary(tag: str, png: bytes):
    """A TensorBoard image summary holding ``png`` as it is: ``add_image`` would take an
    array and encode it again."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    height, width, channels = png_header(png)
    image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png)
    return Summary(value=[Summary.Value(tag=tag, image=image)])


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
        say(f"epoch {self.epoch + 1}/{self.num_epochs}  {shown}  ({time.perf_counter() - self.t0:.1f}s)")
