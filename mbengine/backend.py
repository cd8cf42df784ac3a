"""Which code runs the kernels: the native library built at warmup, or Numba.

One choice per process, made at the first model load (:func:`get`):

* ``native``: the library ``mbengine warmup`` builds for this CPU and these
  kernel sources (:mod:`mbengine.kernels.native`). Numba and llvmlite are
  never imported: the process is ~100 MiB smaller and starts faster. Outputs
  are bit-identical to Numba's.
* ``numba``: the kernels compiled (or loaded from Numba's cache) in the
  process, as always.

``MBENGINE_KERNELS`` chooses: ``auto`` (default: native when a library for
this build exists, else Numba, with one :class:`PerformanceWarning` saying
why), ``native`` (an error when none can be loaded) or ``numba``. A model
whose calls the library lacks (a kernel specialisation warmup never saw) runs
on Numba, with a warning.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings

from .errors import PerformanceWarning
from .kernels import layout as k_layout


class NumbaKernels:
    """The Numba-compiled kernels (imported on first use)."""

    name = "numba"

    def __init__(self):
        self._dispatchers: dict = {}  # kernel name -> its dispatcher (the runner binds ~300 calls per shape)

    def layout(self) -> k_layout.Layout:
        return k_layout.compiled()

    def bind(self, name: str, args: tuple) -> tuple:
        """(the Numba dispatcher, ``args``): what the runner calls as ``kernel(*args)``."""
        kernel = self._dispatchers.get(name)
        if kernel is None:
            module, _, fn = name.partition(".")
            kernel = self._dispatchers[name] = getattr(importlib.import_module(f"mbengine.kernels.{module}"), fn)
        return kernel, args

    @property
    def max_threads(self) -> int:
        import numba

        return numba.config.NUMBA_NUM_THREADS

    def get_num_threads(self) -> int:
        import numba

        return numba.get_num_threads()

    def set_num_threads(self, n: int) -> None:
        import numba

        numba.set_num_threads(n)

    def threading_layer(self) -> str | None:
        """The layer in use, None until the first parallel kernel has run."""
        import numba

        try:
            return numba.threading_layer()
        except ValueError:
            return None


class NativeKernels:
    """The kernels of a loaded native library (:class:`mbengine.kernels.native.Library`)."""

    name = "native"

    def __init__(self, library):
        self.library = library

    def layout(self) -> k_layout.Layout:
        return self.library.layout

    def bind_all(
        self, calls, lasting: dict | None = None, lasting_ids: frozenset = frozenset(), resizable=(), record=None
    ):
        """(bound, dims) of a plan: see ``kernels.native.Library.bind_all``."""
        return self.library.bind_all(calls, lasting, lasting_ids, resizable, record)

    @property
    def max_threads(self) -> int:
        return self.library.pool.threads

    def get_num_threads(self) -> int:
        return self.library.pool.get_num_threads()

    def set_num_threads(self, n: int) -> None:
        self.library.pool.set_num_threads(n)

    def threading_layer(self) -> str | None:
        return self.library.layer


_lock = threading.Lock()
_chosen = None
_warned: set = set()  # the kernel sets bind_plan has warned about (once each per process)
NUMBA = NumbaKernels()


def get():
    """The process's kernels (module doc); chosen once."""
    global _chosen
    with _lock:
        if _chosen is None:
            _chosen = _choose()
        return _chosen


def _choose():
    mode = os.environ.get("MBENGINE_KERNELS", "auto").strip().lower() or "auto"
    if mode not in ("auto", "native", "numba"):
        raise ValueError(f"MBENGINE_KERNELS={mode!r}: expected auto, native or numba")
    if mode == "numba":
        return NUMBA
    from .kernels import native

    library, why = native.load()
    if library is None:
        if mode == "native":
            raise RuntimeError(f"MBENGINE_KERNELS=native: {why}")
        warnings.warn(
            f"running the kernels on Numba: {why}. `mbengine warmup CHECKPOINT` builds the native library "
            "(a smaller process that starts faster; same outputs)",
            PerformanceWarning,
            stacklevel=_caller(),
        )
        return NUMBA
    k_layout.use(library.layout)
    return NativeKernels(library)


def layout() -> k_layout.Layout:
    """The geometry of the process's kernels (weights are packed and buffers sized by it)."""
    return get().layout()


def _caller() -> int:
    """The stacklevel of the first frame outside mbengine: a warning names the user's line."""
    import sys

    frame, level = sys._getframe(1), 1
    package = __name__.rpartition(".")[0]
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == package:
        frame, level = frame.f_back, level + 1
    return level


def reset() -> None:
    """Forget the choice (tests; a process that has loaded native kernels keeps their geometry until then)."""
    global _chosen
    with _lock:
        _chosen = None
        k_layout.use(None)


def bind_plan(
    calls,
    preferred=None,
    lasting: dict | None = None,
    lasting_ids: frozenset = frozenset(),
    resizable=(),
    record: dict | None = None,
) -> tuple:
    """``(kernels, bound, dims)`` for a plan's ``(name, args)`` calls: ``bound[i]`` is ``(function,
    arguments)`` to call as ``function(*arguments)``. The kernels are ``preferred`` (default: the
    process's), or Numba (with a warning, once per set of missing kernels) when that is a native library
    lacking a call. ``lasting``, ``lasting_ids``: what the caller's plans share when bound to a native
    library (the C form of the arrays the caller keeps alive, see ``kernels.native.Library.bind_all``).
    ``resizable``: arrays whose dimensions a native plan lets ``dims`` change (``kernels.native.Dims``;
    None on Numba): the same plan then runs on leading parts of these arrays (see ``runner.Frame``).
    ``record``: see ``kernels.native.Library.bind_all`` (filled on a native library only)."""
    kernels = preferred or get()
    if kernels is not NUMBA:
        bound, dims = kernels.bind_all(calls, lasting, lasting_ids, resizable, record)
        missing = tuple(sorted({name for (name, _), b in zip(calls, bound) if b is None}))
        if not missing:
            return kernels, bound, dims
        if missing not in _warned:
            _warned.add(missing)
            warnings.warn(
                f"the native kernel library has no build of {', '.join(missing)} for this model's calls: running "
                "it on Numba (`mbengine warmup` on this checkpoint adds them)",
                PerformanceWarning,
                stacklevel=_caller(),
            )
    return NUMBA, [NUMBA.bind(name, args) for name, args in calls], None


def build_native(models, directory=None):
    """Build (or extend) the native library with every kernel call the models' arenas make; returns the
    manifest's path. Needs Numba and a C compiler (see :mod:`mbengine.kernels.export`)."""
    from .kernels import export, native

    specs = set()
    for model in models:
        for runner in model._runners.values():
            for arena in runner._arenas.values():
                specs.update((name, native._freeze(native.kinds(args))) for name, args in arena.calls)
    if not specs:
        raise ValueError("no kernel calls to build: run each model once first")
    return export.build(sorted(specs), directory)
