"""The fused path of the losses: each loss's per-row function run as few kernels as possible.

Every loss here computes its per-sample values and their gradient in closed form in one
pure function of detached tensors (``rows(z, ...) -> (values [B], grad [B, C] | None, ...)``,
see ``base.RowLossWithGrad``). Run eagerly, such a function is a chain of tensor ops, one
pass over ``B x C`` each (and one kernel launch each on a GPU). Two fused paths replace it:

- ``kernel``: a hand-written CPU kernel (``cpu_kernels.cpp``, built and loaded by
  ``losses/kernels.py``) that reads each row once and writes its value and gradient in the
  same pass, registered with ``@kernel_of(eager_fn)`` beside the eager function;
- ``compiled``: ``torch.compile`` of the row function (Triton kernels on CUDA, C++/OpenMP
  loops on the CPU): inductor fuses the chain into a few loops that read the logits once.

Which path runs (``mode``, settable with ``set_mode`` / ``mode_as``, the environment variable
``SOFTLOSS_FUSED``, or the config key ``trainer.fused_loss``):

- ``'auto'`` (default): on the CPU, the hand-written kernel where the function has one and the
  kernels build here (a C++ compiler on the PATH); else the compiled function on CUDA (when
  Triton is importable) and on the CPU when a compiler is there, the logits hold at least
  ``CPU_MIN_ELEMENTS`` entries (below that the eager chain costs well under a millisecond, and a
  first compile costs seconds) and the function is not marked ``eager_on_cpu`` (its compiled
  CPU code measured slower); else eager. Never while ``torch.compile`` is already tracing
  (``trainer.compile=true`` compiles the loss together with the model: the outer trace gets the
  fusable variant of the row function). A kernel or compile that fails falls back to the eager
  function, with one warning, for the rest of the process.
- ``'kernel'``: the hand-written kernel wherever the function has one (else eager); errors
  propagate (the tests use it to check the kernels themselves).
- ``'compile'``: always the compiled function; errors propagate.
- ``'off'``: always eager.

The compiled path runs the same function unless the family registers a compile-friendly
variant of it (``@variant_of(eager_fn)``): the same values and gradient written with masks
(``col == label``) instead of ``scatter``/``index_select``, which inductor cannot fuse across,
and with every row treated alike (no data-dependent subsets). Every path agrees with the eager
one to float rounding (tests/test_losses_fused.py). Each compiled function is compiled once per
process (and per static argument); shapes are dynamic after the first recompilation, so a new
batch size or class count does not compile again. Compiled code is cached on disk by inductor
across processes, the kernels by ``losses/kernels.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Callable

import torch

__all__ = ["CPU_MIN_ELEMENTS", "MODES", "PATHS", "available", "call", "eager_on_cpu", "get_mode", "kernel_of",
           "mode_as", "path_for", "set_mode", "variant_of", "wants_fused"]

MODES = ("auto", "kernel", "compile", "off")
#: the paths a call can take (the keys of ``counts``).
PATHS = ("kernel", "compiled", "eager")
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
_kernels: dict[Callable, Callable] = {}
_broken_kernels: dict[Callable, str] = {}
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


def path_for(z: torch.Tensor, fn: Callable | None = None) -> str:
    """Which path ``call(fn, z, ...)`` takes in the current mode: ``'kernel'``, ``'compiled'`` or ``'eager'``."""
    if _mode == "off" or torch.compiler.is_compiling():
        return "eager"
    # The kernels are float32 (the losses' working precision); float64 callers get the eager path.
    if z.device.type == "cpu" and z.dtype == torch.float32 and fn in _kernels and fn not in _broken_kernels:
        if _mode == "kernel":
            return "kernel"
        if _mode == "auto":
            from softloss_cli.losses import kernels

            if kernels.available():
                return "kernel"
    if _mode == "kernel":
        return "eager"
    if _mode == "compile":
        return "compiled"
    if not available(z.device) or fn in _broken:
        return "eager"
    if z.device.type == "cuda":
        return "compiled"
    return "compiled" if z.numel() >= CPU_MIN_ELEMENTS and fn not in _eager_cpu else "eager"


def wants_fused(z: torch.Tensor, fn: Callable | None = None) -> bool:
    """Whether ``call`` would run a fused path (kernel or compiled) for ``fn`` on logits ``z``."""
    return path_for(z, fn) != "eager"


def kernel_of(eager_fn: Callable) -> Callable:
    """Decorator: the decorated function is the hand-written CPU kernel path of ``eager_fn``
    (same arguments, same outputs up to rounding; ``losses/kernels.py`` launches the kernel)."""

    def register(fn: Callable) -> Callable:
        _kernels[eager_fn] = fn
        return fn

    return register


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


def _count(name: str, path: str) -> None:
    counts[(name, path)] = counts.get((name, path), 0) + 1


def _fallback(fn: Callable, exc: Exception, broken: dict, what: str, args, kwargs):
    """Run ``fn`` eagerly after its ``what`` path failed in 'auto' mode; warn once and remember."""
    name = getattr(fn, "__name__", "fn")
    out = fn(*args, **kwargs)  # raises the caller's own error, if it is one
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    broken[fn] = reason
    warnings.warn(f"{what} loss path unavailable for {name} ({type(exc).__name__}: {reason}); using the eager one",
                  stacklevel=3)
    _count(name, "eager")
    return out


def call(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` on the path ``path_for(args[0], fn)`` gives: its hand-written
    kernel, its compiled form, or ``fn`` itself.

    ``fn`` is a pure function of detached tensors (no autograd inside) whose first argument
    is the ``[B, C]`` logits. In ``'auto'`` mode a failing kernel or compilation makes ``fn``
    run eagerly from then on (one warning); an error of the eager call is the caller's and
    propagates.
    """
    name = getattr(fn, "__name__", "fn")
    path = path_for(args[0], fn)
    if path != "eager":
        impl, broken, what = ((_kernels[fn], _broken_kernels, "kernel") if path == "kernel"
                              else (_compiled_fn(fn), _broken, "fused"))
        try:
            with torch.no_grad():
                out = impl(*args, **kwargs)
        except (IndexError, ValueError):
            raise  # the caller's mistake (a label out of range...), as the eager path would say it
        except Exception as exc:
            if _mode != "auto":
                raise
            with torch.no_grad():
                return _fallback(fn, exc, broken, what, args, kwargs)
        _count(name, path)
        return out
    if torch.compiler.is_compiling():  # an outer torch.compile traces it: give it the fusable form
        fn = _variants.get(fn, fn)
    else:
        _count(name, "eager")
    with torch.no_grad():
        return fn(*args, **kwargs)
