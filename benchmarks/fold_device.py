"""Fold the figures of a GPU run (``benchmarks/device_run.sh``) into BENCHMARKS.md.

    python benchmarks/fold_device.py /work/.device/<files_at>  [--benchmarks BENCHMARKS.md]

Replaces, in BENCHMARKS.md, the text between ``<!-- device:NAME -->`` and ``<!-- /device:NAME -->``
(written by ``run_all.py`` where no GPU was there) with the run's section ``NAME`` (``loss``,
``step``, ``pytest``), headed by the machine it ran on; a section the run did not finish keeps
its "not measured" text. Prints what it replaced.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- device:(\w+) -->\n)(.*?)(<!-- /device:\2 -->)", re.S)


def pytest_summary(text: str) -> str:
    """The gpu-marked tests' outcome: pytest's last summary line and any failing test ids."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    summary = next((ln.strip("= ") for ln in reversed(lines) if re.search(r"\b(passed|failed|error|skipped)\b", ln)
                    and ln.startswith("=")), None)
    failed = [ln.split(" ", 1)[1] for ln in lines if ln.startswith(("FAILED ", "ERROR "))]
    out = ["**gpu-marked tests** (`pytest -m gpu tests/test_losses_fused.py tests/test_gpu.py`): "
           + (summary or "no summary line: the run was cut short; passed so far: "
              + str(sum(" PASSED" in ln for ln in lines)))]
    out += [f"- {f}" for f in failed]
    return "\n".join(out)


def sections(folder: Path) -> dict[str, str]:
    """name -> markdown of each section the run finished."""
    env = {}
    if (folder / "env.json").exists():
        env = json.loads((folder / "env.json").read_text())
    head = (f"Measured on {env.get('device', '?')} (torch {env.get('torch', '?')}, triton {env.get('triton', '?')}, "
            f"CUDA {env.get('cuda', '?')}), commit {env.get('commit', '?')}, {env.get('date', '?')}, by "
            "`benchmarks/device_run.sh`.") if env else "Measured by `benchmarks/device_run.sh`."
    out = {}
    for name in ("loss", "step"):
        md = folder / f"{name}.md"
        if md.exists():
            out[name] = head + "\n\n" + md.read_text().strip() + "\n"
    if (folder / "pytest_gpu.txt").exists():
        out["pytest"] = pytest_summary((folder / "pytest_gpu.txt").read_text()) + "\n"
    return out


def fold(text: str, new: dict[str, str]) -> tuple[str, list[str]]:
    done = []

    def replace(m):
        name = m.group(2)
        if name not in new:
            return m.group(0)
        done.append(name)
        return m.group(1) + new[name] + m.group(4)

    return BLOCK.sub(replace, text), done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md")
    args = p.parse_args(argv)
    new = sections(args.folder)
    if not new:
        print(f"fold_device: nothing to fold in {args.folder}", file=sys.stderr)
        return 1
    text, done = fold(args.benchmarks.read_text(), new)
    args.benchmarks.write_text(text)
    missing = sorted(set(new) - set(done))
    print(f"fold_device: replaced {', '.join(done) or 'nothing'} in {args.benchmarks}"
          + (f"; no block for {', '.join(missing)}" if missing else ""))
    return 0 if done else 1


if __name__ == "__main__":
    raise SystemExit(main())
