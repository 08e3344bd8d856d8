"""The fused path of the losses: each loss's per-row function, compiled into few kernels.

Every loss here computes its per-sample values and their gradient in closed form in one
pure function of detached tensors (``rows(z, ...) -> (values [B], grad [B, C] | None, ...)``,
see ``base.RowLossWithGrad``). Run eagerly, such a function is a chain of tensor ops, one
pass over ``B x C`` each (and one kernel launch each on a GPU). ``call(fn, *args)`` runs it
through ``torch.compile`` instead: inductor fuses the chain into a few loops that read the
logits once (C++/OpenMP on the CPU, Triton kernels on CUDA), which is what makes the losses
cost about what ``F.cross_entropy`` costs (benchmarks/loss_cost.py).

When the fused path runs (``mode``, settable with ``set_mode`` / ``mode_as`` or the
environment variable ``SOFTLOSS_FUSED``):

- ``'auto'`` (default): on CUDA when Triton is importable; on the CPU when a C++ compiler is
  on the PATH, the logits hold at least ``CPU_MIN_ELEMENTS`` entries (below that the eager
  chain costs well under a millisecond, and a first compile costs seconds) and the function is
  not marked ``eager_on_cpu`` (its compiled CPU code measured slower); never while
  ``torch.compile`` is already tracing (``trainer.compile=true`` compiles the loss together
  with the model: the outer trace gets the fusable variant of the row function). A compile
  that fails falls back to the eager function, with one warning, for the rest of the process.
- ``'on'``: always (errors propagate: the tests use it to check the fused path itself).
- ``'off'``: never.

Both paths run the same function unless the family registers a compile-friendly variant of
it (``@variant_of(eager_fn)``): the same values and gradient written with masks (``col ==
label``) instead of ``scatter``/``index_select``, which inductor cannot fuse across, and with
every row treated alike (no data-dependent subsets). Either way the two paths agree to float
rounding (tests/test_losses_fused.py). Each compiled function is compiled once per process (and per static argument); shapes are
dynamic after the first recompilation, so a new batch size or class count does not compile
again. Compiled code is cached on disk by inductor across processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Callable

import torch

__all__ = ["CPU_MIN_ELEMENTS", "MODES", "available", "call", "eager_on_cpu", "get_mode", "mode_as", "set_mode",
           "variant_of", "wants_fused"]

MODES = ("auto", "on", "off")
#: on the CPU, ``'auto'`` fuses logits of at least this many entries (B = 4096 at C = 16).
CPU_MIN_ELEMENTS = 1 << 16

_mode = os.environ.get("SOFTLOSS_FUSED", "auto")
if _mode not in MODES:  # a typo in the environment must not break every loss
    warnings.warn(f"SOFTLOSS_FUSED={_mode!r} is not one of {', '.join(MODES)}; using 'auto'", stacklevel=1)
    _mode = "auto"
#: ``SOFTLOSS_FUSED_DYNAMIC=1``: compile with dynamic shapes from the first call (one compilation
#: per function whatever the shapes: benchmarks over several class counts); default: torch's
#: automatic choice (static, then dynamic once a second shape is seen).
_dynamic = {"1": True, "0": False}.get(os.environ.get("SOFTLOSS_FUSED_DYNAMIC", ""))
_compiled: dict[Callable, Callable] = {}
_broken: dict[Callable, str] = {}
_available: dict[str, bool] = {}
_variants: dict[Callable, Callable] = {}
_eager_cpu: set[Callable] = set()
#: how many calls took each path, per function name (read by the tests and the benchmark).
counts: dict[tuple[str, str], int] = {}


def get_mode() -> str:
    """The current mode: ``'auto'``, ``'on'`` or ``'off'``."""
    return _mode


def set_mode(mode: str) -> str:
    """Set the mode for the process; returns the previous one. Raises ValueError for another value."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"fused mode must be one of {', '.join(MODES)}, got {mode!r}")
    previous, _mode = _mode, mode
    return previous


@contextlib.contextmanager
def mode_as(mode: str):
    """``with mode_as('off'): ...`` runs the block in ``mode`` and restores the previous one."""
    previous = set_mode(mode)
    try:
        yield
    finally:
        set_mode(previous)


def available(device: torch.device) -> bool:
    """Whether ``torch.compile`` can build kernels for ``device``: Triton for CUDA, a C++
    compiler for the CPU (cached per device type)."""
    kind = torch.device(device).type
    if kind not in _available:
        if kind == "cuda":
            try:
                from torch.utils._triton import has_triton

                _available[kind] = bool(has_triton())
            except ImportError:
                _available[kind] = False
        elif kind == "cpu":
            _available[kind] = any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c)
        else:
            _available[kind] = False
    return _available[kind]


def wants_fused(z: torch.Tensor, fn: Callable | None = None) -> bool:
    """Whether ``call`` would run the compiled ``fn`` on logits ``z`` in the current mode."""
    if _mode == "off" or torch.compiler.is_compiling():
        return False
    if _mode == "on":
        return True
    if not available(z.device):
        return False
    if z.device.type == "cuda":
        return True
    return z.numel() >= CPU_MIN_ELEMENTS and fn not in _eager_cpu


def variant_of(eager_fn: Callable) -> Callable:
    """Decorator: the decorated function is what the fused path compiles in place of ``eager_fn``
    (same arguments, same outputs up to rounding)."""

    def register(fn: Callable) -> Callable:
        _variants[eager_fn] = fn
        return fn

    return register


def eager_on_cpu(fn: Callable) -> Callable:
    """Decorator: in ``'auto'`` mode, run ``fn`` eagerly on the CPU (compiled on CUDA): for row
    functions whose compiled CPU code measured slower than the eager chain (BENCHMARKS.md, loss
    cost, eager column), e.g. those built on ``cumsum``, which inductor's C++ backend leaves to
    ATen, splitting the fused loops around it."""
    _eager_cpu.add(fn)
    return fn


def _compiled_fn(fn: Callable) -> Callable:
    compiled = _compiled.get(fn)
    if compiled is None:
        compiled = torch.compile(_variants.get(fn, fn), dynamic=_dynamic)
        _compiled[fn] = compiled
    return compiled


def call(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)``, compiled when ``wants_fused(args[0])``, else eager.

    ``fn`` is a pure function of detached tensors (no autograd inside) whose first argument
    is the ``[B, C]`` logits. In ``'auto'`` mode a compilation error makes ``fn`` run eagerly
    from then on (one warning); an error of the eager call is the caller's and propagates.
    """
    name = getattr(fn, "__name__", "fn")
    if wants_fused(args[0], fn) and fn not in _broken:
        try:
            with torch.no_grad():
                out = _compiled_fn(fn)(*args, **kwargs)
        except Exception as exc:
            if _mode == "on":
                raise
            out = fn(*args, **kwargs)  # raises the caller's own error, if it is one
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            _broken[fn] = reason
            warnings.warn(f"fused loss path unavailable for {name} ({type(exc).__name__}: {reason}); "
                          "using the eager one", stacklevel=2)
            counts[(name, "eager")] = counts.get((name, "eager"), 0) + 1
            return out
        counts[(name, "fused")] = counts.get((name, "fused"), 0) + 1
        return out
    if torch.compiler.is_compiling():  # an outer torch.compile traces it: give it the fusable form
        fn = _variants.get(fn, fn)
    else:
        counts[(name, "eager")] = counts.get((name, "eager"), 0) + 1
    with torch.no_grad():
        return fn(*args, **kwargs)
