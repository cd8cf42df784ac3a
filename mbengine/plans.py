"""Native plans bound once and kept on disk: a fresh process skips binding its first plan.

On the native library (:mod:`mbengine.kernels.native`) a plan is one int64
block holding every kernel call's arguments. Binding it visits the ~6 500
arguments of a model's ~300 calls in Python: ~10 ms, a twentieth of a
serving process's time to its first answer. Most of those words are pointers
into a few *roots*, the arrays that own memory: the checkpoint's map (every
weight is a view of it), the runner's arena blocks, the arrays made at load
(int8 corrections, channel masks). The other words (dimensions, offsets,
scalars) depend only on the model and the shape. So the first process that
binds a plan writes it relative to its roots (:class:`~mbengine.kernels.native.Image`);
the next process with the same model finds it, takes the addresses of its
roots (hundreds, not thousands of arrays) and adds them in one vectorised step.

An image is found by a key over everything its words depend on: the kernel
library's key, mbengine's own source files (size and modification time, as
Python's bytecode cache checks them), NumPy's version, the model (the runner's
``recipe``: config, head, options), each root's size and type and, for a
checkpoint's map, where its file puts each tensor
(:func:`~mbengine.safetensors_mmap.layout_digest`), and the shape family
(batch, threads, padding, the frame's capacity). Whatever the key, an image
whose roots do not hold every extent it records is refused: its pointers
cannot leave the arrays they pointed into when it was made. An image is
trusted as the library beside it is (both are the user's own files: a
changed library runs any code): the key finds a stale one, not a forged one.

Images live in ``plans/`` beside the library, else in the user's cache
(``$XDG_CACHE_HOME`` or ``~/.cache``, ``mbengine/plans``); where neither can
be written, none is kept and every process binds. Each is ~100 KB.
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np

from . import safetensors_mmap
from .kernels import native

FORMAT = 1  # of an image's key and file


class Store:
    """The images of one runner's plans (module doc). ``kept``: the arrays the runner's plans pass that
    live as long as it (its graph's, the prefetch views, the placeholders), in an order that the same
    model gives in every process; ``recipe``: what built its graph."""

    def __init__(self, kept: list, recipe: str):
        roots, seen = [], set()
        for a in kept:
            r = native.owner(a)
            if id(r) not in seen:
                seen.add(id(r))
                roots.append(r)
        self._roots = roots
        self._recipe = recipe
        self._found: list | None = None  # [(root, address, bytes)], taken when first asked
        self._model_key: str | None = None

    def _kept_roots(self) -> list:
        if self._found is None:
            self._found = [(r, r.ctypes.data, r.nbytes) for r in self._roots]
        return self._found

    def _key(self, library, shape: tuple, frame_roots: list) -> str:
        if self._model_key is None:
            roots = [(r.nbytes, r.dtype.str, safetensors_mmap.layout_digest(r)) for r in self._roots]
            parts = [FORMAT, library.key, _sources(), np.__version__, self._recipe, roots]
            self._model_key = native.sha256(json.dumps(parts).encode()).hexdigest()
        frame = [(r.dtype.str, r.ndim) for r, _, _ in frame_roots]
        parts = [self._model_key, list(shape), frame]
        return native.sha256(json.dumps(parts).encode()).hexdigest()[:24]

    def bind(self, library, shape: tuple, frame_roots: list):
        """(bound, dims) of the plan of this ``shape`` from its image, or None (no usable image)."""
        roots = frame_roots + self._kept_roots()
        name = f"plan-{self._key(library, shape, frame_roots)}.bin"
        for folder in _folders(library):
            try:
                with open(os.path.join(folder, name), "rb") as f:
                    image = native.Image.from_bytes(f.read())
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError):
                return None  # (unreadable or not an image: bound again, and written over)
            bases = np.array([b for _, b, _ in roots], np.int64)
            room = np.array([n for _, _, n in roots], np.int64)
            return library.bind_image(image, bases, room)
        return None

    def save(self, library, shape: tuple, frame_roots: list, record: dict) -> str | None:
        """Keep the plan :meth:`kernels.native.Library.bind_all` recorded in ``record`` for this
        ``shape``; its path, or None where it has no image (a pointer outside the roots) or no folder
        takes it."""
        import tempfile  # (writing only: ~5 ms of imports a process that finds its images skips)

        image = native.Image.make(record, [(r, b) for r, b, _ in frame_roots + self._kept_roots()])
        if image is None:
            return None
        data = image.to_bytes()
        name = f"plan-{self._key(library, shape, frame_roots)}.bin"
        for folder in _folders(library):
            try:
                os.makedirs(folder, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".plan-", dir=folder)
                try:
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                    os.chmod(tmp, 0o644)  # (mkstemp's is 0600: other users of a shared install read it too)
                    os.replace(tmp, os.path.join(folder, name))  # (whole or absent, for a process reading it now)
                except BaseException:
                    os.unlink(tmp)
                    raise
                return os.path.join(folder, name)
            except OSError:
                continue
        return None


def _folders(library) -> list[str]:
    """Where images are kept: beside the library, then the user's cache."""
    return list(dict.fromkeys([os.path.join(os.path.dirname(library.path), "plans"), native.user_cache("plans")]))


@functools.cache
def _sources() -> list:
    """(folder, file, size, modification time) of mbengine's Python files and its converters' (the
    kernels' are in the library's key)."""
    from . import converters

    stamp = []
    for folder in (os.path.dirname(__file__), os.path.dirname(converters.__file__)):
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.name.endswith(".py"):
                st = entry.stat()
                stamp.append((os.path.basename(folder), entry.name, st.st_size, st.st_mtime_ns))
    return stamp
