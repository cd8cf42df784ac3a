"""The kernels' geometry, and the weight layouts it implies, without Numba.

The compiled kernels read weights in panels whose width (``cols``) and scratch
whose shape (``rows`` per register tile, the int8 variant's activation
encoding) follow the CPU they were compiled for (:mod:`.target`,
:mod:`.simd`, :mod:`.qsimd`). Loading a model needs those numbers to pack
weights and size buffers, but need not compile anything: a process that runs
the native library built at warmup (:mod:`.native`) takes them from that
library's manifest and never imports Numba or llvmlite. So the numbers are a
plain record here, and the packers are NumPy functions of it.

:func:`current` is the geometry in force: the native library's when one is
loaded (``use``), else the Numba kernels' (importing them: that decides the
compile target).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

INLIER = 0x7FFFFFFF  # qlinear's channel mask value of an inlier channel (0: an outlier, applied in float32)
QMAX = 127  # int8 weights: symmetric in [-127, 127] on every CPU
# An int8 model runs attention's scores in int8 (kernels.qattention) for sequences of at least this many visible
# tokens, on the int8 variants where that was measured faster than the float32 kernel (python -m bench
# qattention, one layer; its time over the float32 kernel's, 1 / 2 threads). vnni, Zen 4: 0.92 / 1.01 at 128
# tokens, 0.85 / 0.85 at 256, 0.83 / 0.81 at 384 (amx runs the same register tiles here). maddubs (compiled for
# haswell on that Zen 4): 1.16 / 1.12 at 128, 1.13 / 1.03 at 256, 1.08 / 0.95 at 384, so not there; sdot, smull
# and generic are unmeasured and keep float32.
INT8_ATTENTION_FROM = 160
INT8_ATTENTION_VARIANTS = ("vnni", "amx")


def int8_scores(layout: Layout, head_dim: int) -> bool:
    """Whether an int8 model's attention runs its long sequences' scores in int8 on this geometry (the int8
    tiles take whole panels of a head)."""
    return layout.variant in INT8_ATTENTION_VARIANTS and head_dim % layout.cols == 0


SIGN_PATTERN = np.uint64(0x1111111111111111)  # a 4-bit sign pattern in every 4 bits of a 64-bit lane mask


class Layout(NamedTuple):
    """What the compiled kernels expect (module doc)."""

    target: str  # the compile target, described (kernels.target.Target.describe)
    lanes: int  # float32 lanes per vector
    cols: int  # outputs per weight panel (float32 and int8 alike)
    rows: int  # rows per float32 register tile
    variant: str  # the int8 micro-kernel (kernels.qsimd.VARIANTS)
    offset: int  # added to every quantized activation (vnni 128, maddubs7 64, else 0)
    xmax: int  # quantized activations lie in [-xmax, xmax]
    sign_bytes: int  # extra scratch bytes per int8 input holding signs (maddubs)

    @property
    def qx_dtype(self):
        """The quantized activations' storage type."""
        return np.uint8 if self.offset or self.sign_bytes else np.int8

    @property
    def qx_bytes(self) -> int:
        """Scratch bytes per quantized input: the value, and for maddubs its sign."""
        return 1 + self.sign_bytes

    def to_json(self) -> dict:
        return self._asdict()

    @classmethod
    def from_json(cls, d: dict) -> Layout:
        return cls(**{k: d[k] for k in cls._fields})


_native: Layout | None = None


def use(layout: Layout | None) -> None:
    """Make ``layout`` (a loaded native library's) the one in force; None: back to the Numba kernels'."""
    global _native
    _native = layout


def current() -> Layout:
    """The geometry in force (module doc)."""
    return _native if _native is not None else compiled()


def compiled() -> Layout:
    """The geometry of the Numba kernels of this process (imports them)."""
    from . import qsimd, simd

    return Layout(
        target=qsimd.TARGET.describe(),
        lanes=simd.LANES,
        cols=simd.COLS,
        rows=simd.ROWS,
        variant=qsimd.VARIANT,
        offset=qsimd.OFFSET,
        xmax=qsimd.XMAX,
        sign_bytes=qsimd.SIGN_BYTES,
    )


def pack(w: np.ndarray, cols: int) -> np.ndarray:
    """(N, K) float32 weight -> (ceil(N / cols), K, cols) panels, zero-padded, read-only:
    ``wp[p, k, c] = W[p * cols + c, k]`` (what kernels.linear streams)."""
    N, K = w.shape
    P = -(-N // cols)
    wp = np.zeros((P * cols, K), np.float32)
    wp[:N] = w
    wp = np.ascontiguousarray(wp.reshape(P, cols, K).transpose(0, 2, 1))
    wp.flags.writeable = False
    return wp


def qpack(wq: np.ndarray, cols: int) -> np.ndarray:
    """(N, K) int8 -> (P, ceil(K / 4), 4 * cols) panels: ``wp[p, g, 4c + j] = wq[p*cols + c, 4g + j]``."""
    N, K = wq.shape
    P, K4 = -(-N // cols), -(-K // 4)
    padded = np.zeros((P * cols, K4 * 4), np.int8)
    padded[:N, :K] = wq
    wp = np.ascontiguousarray(padded.reshape(P, cols, K4, 4).transpose(0, 2, 1, 3).reshape(P, K4, 4 * cols))
    wp.flags.writeable = False
    return wp


def qunpack(wp: np.ndarray, n: int, k: int) -> np.ndarray:
    """Panels back to the (n, k) int8 weight (inverse of :func:`qpack`)."""
    P, K4, C4 = wp.shape
    cols = C4 // 4
    return np.ascontiguousarray(wp.reshape(P, K4, cols, 4).transpose(0, 2, 1, 3).reshape(P * cols, K4 * 4)[:n, :k])


def column_sums(wp: np.ndarray) -> np.ndarray:
    """``sum_k wq[n, k]`` per packed column of int8 panels (int32, P * cols; what :func:`correction` scales)."""
    P, K4, C4 = wp.shape
    # over the groups first, then the 4 bytes of each column: NumPy adds whole contiguous rows (~10x faster
    # than one reduction over both axes: 20 MiB of weights in ~10 ms); the partial sums fit int16 up to
    # 255 groups (|w| <= 128)
    groups = wp.sum(axis=1, dtype=np.int16 if K4 <= 255 else np.int32)
    return groups.reshape(P, C4 // 4, 4).sum(axis=2, dtype=np.int32).reshape(-1)


def correction(wp: np.ndarray, offset: int, sums: np.ndarray | None = None) -> np.ndarray:
    """``offset * sum_k wq[n, k]`` per packed column (int32, P * cols): removes the activation offset.

    ``sums``: the panels' :func:`column_sums` when known (an engine checkpoint stores them: summing
    an int8 model's ~25 MiB of weights was ~8 ms of its load), else computed here.
    """
    P, K4, C4 = wp.shape
    if offset == 0:  # (every variant but vnni and maddubs7)
        return _filled(P * (C4 // 4), 0)
    if sums is None:
        sums = column_sums(wp)
    return np.ascontiguousarray(sums * np.int32(offset), dtype=np.int32)


def channel_mask(k: int, outliers) -> np.ndarray:
    """The (k,) int32 mask kernels.qlinear takes: INLIER everywhere but at ``outliers``."""
    if len(outliers) == 0:
        return _filled(k, INLIER)
    mask = np.full(k, INLIER, np.int32)
    mask[np.asarray(outliers, np.int64)] = 0
    mask.flags.writeable = False
    return mask


@functools.lru_cache(maxsize=64)
def _filled(n: int, value: int) -> np.ndarray:
    """A read-only (n,) int32 array of ``value``, one per (n, value): the zero corrections and the masks
    without outliers recur in every layer of a model (fewer arrays to make at load and to bind)."""
    a = np.full(n, value, np.int32)
    a.flags.writeable = False
    return a


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) float -> (int8 (N, K), float32 scales (N,)), symmetric per row, |error| <= scale / 2."""
    w = np.asarray(w, np.float32)
    amax = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    scale = np.where(amax > 0, amax / np.float32(QMAX), np.float32(1.0)).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -QMAX, QMAX).astype(np.int8)
    return q, scale


def qattention_scratch(layout: Layout, seq: int, head_dim: int, threads: int) -> tuple[tuple, tuple]:
    """Shapes of (bytes, floats) for kernels.qattention: a row of each per thread, which the kernel carves
    (its ``scratch_shapes``, counted with the int8 tile's rows: 4 for smull, else the float32 tile's)."""
    rows = 4 if layout.variant == "smull" else layout.rows
    n = -(-seq // layout.cols) * layout.cols  # keys, in whole panels
    return (threads, n * head_dim + head_dim + rows * head_dim * layout.qx_bytes), (threads, 3 * n)


def attention_scratch(layout: Layout, batch: int, seq: int, heads: int, head_dim: int, threads: int):
    """Shapes of (kp, scores) for kernels.attention: packed keys per (batch, head), a score block per thread."""
    pk = -(-seq // layout.cols)
    return (batch * heads * pk, head_dim, layout.cols), (threads, layout.rows, pk * layout.cols)
