"""``data=manifest``: images listed in a CSV or JSONL file (``data.path=labels.csv``).

Columns (CSV header / JSONL keys), paths relative to the manifest's folder:

    path       required: the image file
    label      one class name or number per image (numbers -> ordinal under data.task=auto)
    labels     multi-label: names separated by ';' (a JSON list works too); an empty cell is
               an image with nothing present; makes the task multilabel
    not_label  a class a person judged wrong for this image ("the model said l, it is not");
               a row may carry label, not_label or both; any row with not_label alone makes
               training a ``partial`` task (targets (class, is_positive), what loss=nl trains
               on); a row with both trains on its label (which already says every other class,
               not_label included, is wrong); val/test rows need a label
    split      train | val | test (optional: splits missing from the column are carved from
               the train rows, seeded and stratified as for image folders; rows with only a
               not_label always train)
    group      optional group id (e.g. the 8 images of one sequence): kept as the per-sample
               extra ``group``; ordinal runs then report ``group_sum_mae``; carving keeps a
               group in one split

Every refusal is one line naming the manifest and the row (the file's line number, the
CSV header being row 1): unknown columns, missing or duplicate paths, labels outside
``data.classes``, ``label`` mixed with ``labels``, a bad split name, an unreadable file.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from softloss_cli.data.base import DATASETS, DataBundle
from softloss_cli.data.image_splits import SplitFiles, image_splits, normalisation
from softloss_cli.data.labels import TASK_CHOICES, class_list, numeric_value, resolve_label_order
from softloss_cli.data.torchvision_sets import stratified_split
from softloss_cli.errors import SoftlossError
from softloss_cli.tasks import Task

COLUMNS = ("path", "label", "labels", "not_label", "split", "group")
SPLITS = ("train", "val", "test")


@dataclass
class Row:
    """One manifest row: its line number, file, and label columns (None = column absent or empty)."""

    line: int
    path: str
    label: str | None = None
    labels: list[str] | None = None
    not_label: str | None = None
    split: str | None = None
    group: str | None = None


def _text(value) -> str | None:
    """A cell as text; None for an empty cell or JSON null. JSON numbers 7 and 7.0 read '7'."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _label_list(value) -> list[str]:
    if isinstance(value, list):
        return [t for t in (_text(v) for v in value) if t]
    text = _text(value)
    return [t.strip() for t in text.split(";") if t.strip()] if text else []


def read_manifest(path: Path) -> list[Row]:
    """The rows of a CSV (header row first) or JSONL (one object per line) manifest."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise SoftlossError(f"cannot read manifest {where}: {type(e).__name__}: {e}") from None
    suffix = path.suffix.lower()
    records: list[tuple[int, dict]] = []
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        header = reader.fieldnames or []
        if not header:
            raise SoftlossError(f"{where} row 1: empty manifest: expected a header row with {', '.join(COLUMNS)}")
        _check_columns(header, where, 1)
        if "label" in header and "labels" in header:
            raise SoftlossError(f"{where} row 1: columns label and labels are mixed: use label for one class per "
                                "image or labels for a ;-separated set")
        try:
            for record in reader:
                if None in record:
                    raise SoftlossError(f"{where} row {reader.line_num}: more cells than the {len(header)} columns "
                                        "of the header")
                records.append((reader.line_num, record))
        except csv.Error as e:
            raise SoftlossError(f"{where} row {reader.line_num}: unreadable CSV: {e}") from None
    elif suffix in (".jsonl", ".ndjson"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise SoftlossError(f"{where} row {number}: not a JSON object: {e.msg}") from None
            if not isinstance(record, dict):
                raise SoftlossError(f"{where} row {number}: not a JSON object")
            _check_columns(list(record), where, number)
            records.append((number, record))
    else:
        raise SoftlossError(f"data.path {where} must be a .csv or .jsonl manifest")
    if not records:
        raise SoftlossError(f"{where} lists no images")
    rows = []
    for number, record in records:
        if _text(record.get("label")) is not None and "labels" in record:
            raise SoftlossError(f"{where} row {number}: label and labels are mixed: use label for one class per "
                                "image or labels for a ;-separated set")
        rows.append(Row(number, _text(record.get("path")) or "", _text(record.get("label")),
                        _label_list(record["labels"]) if "labels" in record else None,
                        _text(record.get("not_label")), _text(record.get("split")), _text(record.get("group"))))
    return rows


def _check_columns(names, where: str, number: int) -> None:
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise SoftlossError(f"{where} row {number}: unknown column '{unknown[0]}'; columns: {', '.join(COLUMNS)}")
    if "path" not in names:
        raise SoftlossError(f"{where} row {number}: no path column; columns: {', '.join(COLUMNS)}")


def check_rows(rows: list[Row], folder: Path, where: str) -> list[str]:
    """Absolute file paths of the rows; refuses an empty path, a missing file, a duplicate,
    a bad split name, a multi-label set mixed with single labels across rows."""
    seen: dict[str, int] = {}
    files = []
    multilabel = rows[0].labels is not None
    for row in rows:
        if not row.path:
            raise SoftlossError(f"{where} row {row.line}: empty path")
        if (row.labels is not None) != multilabel:
            raise SoftlossError(f"{where} row {row.line}: label and labels are mixed: every row uses labels "
                                f"(as row {rows[0].line}) or none does")
        file = os.path.abspath(os.path.join(folder, os.path.expanduser(row.path)))
        if not os.path.isfile(file):
            raise SoftlossError(f"{where} row {row.line}: file {row.path} does not exist (paths are relative to "
                                f"{folder})")
        if file in seen:
            raise SoftlossError(f"{where} row {row.line}: duplicate path {row.path} (also on row {seen[file]})")
        seen[file] = row.line
        if row.split is not None and row.split not in SPLITS:
            raise SoftlossError(f"{where} row {row.line}: split must be train, val or test, got '{row.split}'")
        if multilabel and row.not_label is not None:
            raise SoftlossError(f"{where} row {row.line}: not_label goes with label, not with labels")
        if not multilabel and row.label is None and row.not_label is None:
            raise SoftlossError(f"{where} row {row.line}: no label (give label, not_label or both)")
        if row.label is None and row.split in ("val", "test"):
            raise SoftlossError(f"{where} row {row.line}: a {row.split} row needs a label (not_label alone only "
                                "trains)")
        files.append(file)
    return files


def _check_known(rows: list[Row], classes, where: str) -> None:
    """Refuse the first label outside ``data.classes``, naming its row."""
    given = class_list(classes)
    if given is None:
        return
    for row in rows:
        for column, names in (("label", [row.label]), ("not_label", [row.not_label]), ("labels", row.labels or [])):
            for name in names:
                if name is not None and name not in given:
                    raise SoftlossError(f"{where} row {row.line}: {column} '{name}' is not in data.classes "
                                        f"({', '.join(given)})")


def _multilabel_order(rows: list[Row], classes) -> tuple[str, ...]:
    given = class_list(classes)
    if given is not None:
        return tuple(given)
    names = sorted({n for row in rows for n in row.labels})
    if names and all(numeric_value(n) is not None for n in names):
        names = sorted(names, key=numeric_value)
    return tuple(names)


def _carve(rows: list[Row], strata: torch.Tensor, fractions: dict[str, float], seed: int) -> list[str]:
    """Each row's split: its ``split`` cell, else carved (stratified by ``strata``; whole groups
    when the manifest has groups; not_label-only rows stay in train)."""
    assigned = [row.split for row in rows]
    carve = [s for s in ("val", "test") if not any(a == s for a in assigned)]
    # Rows that may move to a carved split: train rows (given or not) that have a true label.
    free = [i for i, row in enumerate(rows)
            if row.split in (None, "train") and (row.label is not None or row.labels is not None)]
    assigned = [a or "train" for a in assigned]
    if not carve or not free:
        return assigned
    wanted = [fractions[s] for s in carve]
    if any(row.group is not None for row in rows):
        # Whole groups: a seeded order of the groups, cut where the cumulative row share passes each fraction.
        keys = [rows[i].group if rows[i].group is not None else f"\0row{i}" for i in free]
        groups = list(dict.fromkeys(keys))
        perm = torch.randperm(len(groups), generator=torch.Generator().manual_seed(int(seed))).tolist()
        sizes = {g: 0 for g in groups}
        for k in keys:
            sizes[k] += 1
        target, taken, part = [round(f * len(free)) for f in wanted], 0, 0
        cum = [sum(target[: j + 1]) for j in range(len(target))]
        chosen: dict[str, str] = {}
        for g in (groups[p] for p in perm):
            while part < len(carve) and taken >= cum[part]:
                part += 1
            if part >= len(carve):
                break
            chosen[g] = carve[part]
            taken += sizes[g]
        for i, k in zip(free, keys):
            assigned[i] = chosen.get(k, assigned[i])
        return assigned
    parts = stratified_split(strata[free], wanted, seed)
    for name, index in zip(carve, parts[1:]):
        for j in index.tolist():
            assigned[free[j]] = name
    return assigned


@DATASETS.register("manifest", "your own images listed in a CSV/JSONL file: data.path=labels.csv with columns "
                               "path, label | labels, not_label, split, group")
def build_manifest(
    data_root: Path,
    *,
    path: str | None = None,
    task: str = "auto",
    classes=None,
    image_size: int = 64,
    channels: int = 3,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    cache_max_gb: float = 8.0,
    on_bad_image: str = "fail",
) -> DataBundle:
    """The images of a manifest (module docstring), decoded once and held in memory.

    Task: multilabel with a ``labels`` column; else ``labels.resolve_label_order`` of every
    ``label`` and ``not_label`` name (``task``, ``classes``); ``partial`` when a training row
    has only a ``not_label``. ``task.extras['group_names']`` maps group ids back to the names.
    """
    if path is None or str(path).strip() == "":
        raise SoftlossError("data=manifest needs data.path=/path/to/labels.csv (or .jsonl)")
    manifest = Path(os.path.expanduser(str(path)))
    if not manifest.is_file():
        raise SoftlossError(f"data.path {manifest} does not exist: pass a .csv or .jsonl manifest")
    if task not in TASK_CHOICES:
        raise SoftlossError(f"data.task must be one of {', '.join(TASK_CHOICES)}, got {task!r}")
    if int(channels) not in (1, 3):
        raise SoftlossError(f"data.channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if int(image_size) < 1:
        raise SoftlossError(f"data.image_size must be >= 1, got {image_size}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise SoftlossError(f"data.val_fraction and data.test_fraction must be in [0, 1) with a sum below 1, "
                            f"got {val_fraction} and {test_fraction}")
    where = str(manifest)
    rows = read_manifest(manifest)
    files = check_rows(rows, manifest.parent, where)
    _check_known(rows, classes, where)
    multilabel = rows[0].labels is not None
    extras_info: dict = {}
    if multilabel:
        if task != "auto":
            raise SoftlossError(f"{where} has a labels column (multi-label): data.task must be auto, got {task}")
        names = _multilabel_order(rows, classes)
        if not names:
            raise SoftlossError(f"{where}: no labels in any row: a multi-label set needs at least one class")
        index = {n: i for i, n in enumerate(names)}
        targets = torch.zeros(len(rows), len(names))
        for i, row in enumerate(rows):
            for n in row.labels:
                targets[i, index[n]] = 1.0
        kind, values, order_line = "multilabel", None, f"multilabel, {len(names)} classes: {', '.join(names)}"
        strata = torch.zeros(len(rows), dtype=torch.int64)
        extras_info["class_order"] = "given" if classes is not None else "text"
    else:
        found = {r.label for r in rows if r.label is not None} | {r.not_label for r in rows if r.not_label is not None}
        order = resolve_label_order(found, task, classes, where=where)
        names, kind, values, order_line = order.classes, order.kind, order.values, order.describe()
        index = {n: i for i, n in enumerate(names)}
        positive = torch.tensor([r.label is not None for r in rows])
        label = torch.tensor([index[r.label if r.label is not None else r.not_label] for r in rows])
        targets = torch.stack([label, positive.long()], dim=1)
        strata = label
        extras_info["class_order"] = order.order
    assigned = _carve(rows, strata, {"val": float(val_fraction), "test": float(test_fraction)}, int(seed))
    extras: dict[str, torch.Tensor] = {}
    group_names: list[str] = []
    if any(r.group is not None for r in rows):
        ids: dict[str, int] = {}
        for r in rows:
            if r.group is not None and r.group not in ids:
                ids[r.group] = len(ids)
        extras["group"] = torch.tensor([ids[r.group] if r.group is not None else -1 for r in rows])
        group_names = list(ids)
    partial = not multilabel and any(r.label is None and a == "train" for r, a in zip(rows, assigned))
    parts = {}
    for split in SPLITS:
        keep = torch.tensor([a == split for a in assigned])
        index_ = keep.nonzero().squeeze(1)
        split_targets = targets[index_]
        if not multilabel and not (partial and split == "train"):
            split_targets = split_targets[:, 0]
        parts[split] = SplitFiles([files[i] for i in index_.tolist()], split_targets,
                                  {k: v[index_] for k, v in extras.items()})
    line_of = {f: r.line for f, r in zip(files, rows)}
    splits, cache_info = image_splits(parts, image_size=int(image_size), channels=int(channels), data_root=data_root,
                                      cache_max_gb=cache_max_gb, on_bad_image=on_bad_image,
                                      where=lambda f: f"{where} row {line_of[f]}: ")
    task_extras = {**extras_info, "labels": order_line}
    if group_names:
        task_extras["group_names"] = group_names
    if partial:
        the_task = Task("partial", len(names), class_names=tuple(names), label_values=values, base_kind=kind,
                        extras=task_extras)
    else:
        the_task = Task(kind, len(names), class_names=tuple(names), label_values=values, extras=task_extras)
    mean, std = normalisation(int(channels))
    counts = {s: len(v) for s, v in splits.items()}
    negatives = sum(1 for r, a in zip(rows, assigned) if r.label is None and a == "train")
    return DataBundle(
        name="manifest",
        task=the_task,
        **splits,
        input_shape=(int(channels), int(image_size), int(image_size)),
        mean=mean,
        std=std,
        augment_ok=True,
        info={"sizes": counts, "manifest": where, "seed": int(seed), "negative_rows": negatives,
              "groups": len(group_names), **cache_info},
    )
