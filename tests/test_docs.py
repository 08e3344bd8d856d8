"""Every command shown in README.md and docs/*.md runs here, or its block says why not.

The convention (docs/README of the convention: docs/usage.md, "Commands in these pages"):
an HTML comment on the line before a fenced ``bash`` or ``console`` block.

- ``<!-- run -->``: each command runs as written, in a fresh working folder (so ``runs/...``
  paths land there; generated data in the session's shared data root). Every
  ``softloss train`` gets the tiny trainer overrides appended (CPU, float32, one epoch, no
  progress bar): the command's own choices stay, the run is a smoke test of them.
- ``<!-- run: tiny K=V ... -->``: also the tiny data sizes (256/128/128 images), then the
  listed overrides (``seed=0`` keeps one seed of a preset's grid).
- ``<!-- not run: why -->``: shown, not run (a server, a GPU, a cluster, the test suite itself).
- ``<!-- test: NAME -->``: run by the test that reads that name (``tests/test_own_data.py``
  runs the README's own-data recipes); it covers the fenced blocks that follow it directly.

In a run block: ``softloss`` (or ``.venv/bin/softloss``) is ``python -m softloss_cli``; a path
holding ``<...>`` (``runs/multirun/<date>_<time>``) is the newest folder matching it;
``tensorboard --logdir DIR`` is not started but DIR must hold event files; in a ``console``
block, ``$ command`` lines run and the lines under them must appear in its output (``...``
ends a prefix). A command must exit 0 (``console`` blocks: the exit status is not checked).
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, TINY, TINY_TRAINER

DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"^<!--\s*(?P<kind>run|not run|test)\s*(?::\s*(?P<arg>.*?))?\s*-->$")


def command_blocks(path: Path):
    """``(kind, arg, lang, body)`` of every ``bash``/``console`` block of a Markdown file.
    The marker is the line before the block; a block that directly follows another fenced
    block (a CSV file, then the command that reads it) shares that block's marker; kind is
    None when there is none."""
    text = path.read_text()
    previous_end, previous_marker = -1, None
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        marker = MARKER.match(before)
        if marker is None and text[previous_end:m.start()].strip() == "" and previous_end >= 0:
            marker = previous_marker
        previous_end, previous_marker = m.end(), marker
        if m.group("lang") in ("bash", "console"):
            yield (marker.group("kind") if marker else None, (marker.group("arg") or "") if marker else "",
                   m.group("lang"), m.group("body"))


def test_every_command_block_is_run_or_says_why_not():
    missing, unexplained, found = [], [], 0
    for path in DOCS:
        for kind, arg, _, body in command_blocks(path):
            found += 1
            where = f"{path.relative_to(REPO)}: {body.strip().splitlines()[0] if body.strip() else ''}"
            if kind is None:
                missing.append(where)
            elif kind == "not run" and len(arg) < 10:
                unexplained.append(where)
    assert found > 20
    assert not missing, "blocks without <!-- run --> or <!-- not run: why -->:\n" + "\n".join(missing)
    assert not unexplained, "<!-- not run --> without a reason:\n" + "\n".join(unexplained)
    # indented code blocks would escape the convention: commands are fenced
    for path in DOCS:
        assert not re.search(r"\n\n {4}(softloss|tensorboard|python) ", path.read_text()), path


def _commands(body: str) -> list[str]:
    """The body's commands: continuation lines joined, comment lines dropped."""
    joined = body.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def _resolve(arg: str, cwd: Path) -> str:
    if "<" not in arg:
        return arg
    pattern = re.sub(r"<[^>]*>", "*", arg)
    hits = sorted(glob.glob(str(cwd / pattern)), key=os.path.getmtime)
    assert hits, f"nothing matches {arg} in {cwd}"
    return hits[-1]


def _argv(command: str, extra: list[str], cwd: Path) -> list[str] | None:
    words = [_resolve(w, cwd) for w in shlex.split(command, comments=True)]
    if not words:
        return None
    if words[0] in ("softloss", ".venv/bin/softloss"):
        words = [sys.executable, "-m", "softloss_cli", *words[1:]]
        if words[3:4] == ["train"]:
            words += extra
    elif words[0] in ("python", "python3"):
        words = [sys.executable, *words[1:]]
    return words


def _check_logdir(words: list[str], cwd: Path) -> None:
    logdir = Path(words[words.index("--logdir") + 1])
    logdir = logdir if logdir.is_absolute() else cwd / logdir
    assert list(logdir.rglob("events.out.tfevents.*")), f"tensorboard --logdir {logdir}: no event files"


def run_block(arg: str, lang: str, body: str, cwd: Path, env: dict) -> None:
    tokens = arg.split()
    extra = [*TINY_TRAINER]
    if tokens[:1] == ["tiny"]:
        extra, tokens = [*TINY], tokens[1:]
    extra += tokens
    if lang == "console":
        _run_console(body, extra, cwd, env)
        return
    for command in _commands(body):
        words = shlex.split(command, comments=True)
        if words and words[0] in ("tensorboard", ".venv/bin/tensorboard"):
            _check_logdir([_resolve(w, cwd) for w in words], cwd)
            continue
        argv = _argv(command, extra, cwd)
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{command}\n-> exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        time.sleep(1.1)  # runs are named by the second they start: the next one gets its own folder


def _run_console(body: str, extra: list[str], cwd: Path, env: dict) -> None:
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            i += 1
            continue
        command = lines[i][2:]
        expected = []
        i += 1
        while i < len(lines) and not lines[i].startswith("$ "):
            if lines[i].strip():
                expected.append(lines[i].rstrip())
            i += 1
        proc = subprocess.run(_argv(command, extra, cwd), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        shown = (proc.stdout + proc.stderr).splitlines()
        for line in expected:
            prefix = line[:-3] if line.endswith("...") else None
            assert any(s.startswith(prefix) if prefix is not None else s.rstrip() == line for s in shown), (
                f"$ {command}\nexpected: {line}\ngot:\n" + "\n".join(shown[-20:]))


def _docs_with_runs():
    return [p for p in DOCS if any(kind == "run" for kind, *_ in command_blocks(p))]


@pytest.mark.slow
@pytest.mark.parametrize("doc", _docs_with_runs(), ids=lambda p: str(p.relative_to(REPO)))
def test_doc_commands_run(doc, tmp_path, data_root):
    """The run blocks of one page, in order, in one working folder (a block may read what an
    earlier one wrote: a report of the sweep above it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "SOFTLOSS_DATA_ROOT": str(data_root), "PYTHONUNBUFFERED": "1"}
    env.pop("SOFTLOSS_RUNS_ROOT", None)
    env.pop("SOFTLOSS_DEBUG", None)
    for kind, arg, lang, body in command_blocks(doc):
        if kind == "run":
            run_block(arg, lang, body, tmp_path, env)
