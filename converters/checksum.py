"""CRC-32C (Castagnoli), as LevelDB tables and TensorFlow tensor bundles store it.

TensorFlow checks its checkpoints with CRC-32C: every SSTable block trailer and
every tensor's ``BundleEntryProto.crc32c`` hold the *masked* CRC of the bytes
(:func:`mask`). Short inputs go through the byte-at-a-time table loop; long
ones are cut into equal lanes whose CRC registers NumPy advances together, one
byte of every lane per step, and the lanes are then chained: a CRC register is
linear over GF(2), so running it over ``m`` more bytes is ``shift(state) ^
crc_from_zero(bytes)``, where ``shift`` (running over ``m`` zero bytes) is a
32 x 32 bit matrix computed once.
"""

from __future__ import annotations

import numpy as np

POLY = 0x82F63B78  # the Castagnoli polynomial, bit-reversed
MASK_DELTA = 0xA282EAD8


def _table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(POLY), t >> 1).astype(np.uint32)
    return t


TABLE = _table()
_TABLE_LIST = [int(v) for v in TABLE]
_LANES = 4096
_SMALL = 1 << 16  # below this, the plain loop is faster


def _update(state: int, data) -> int:
    t = _TABLE_LIST
    for b in data:
        state = t[(state ^ b) & 0xFF] ^ (state >> 8)
    return state


def _update_lanes(data: np.ndarray, state: int) -> int:
    """The register after ``data`` (a multiple of _LANES bytes), starting from ``state``."""
    m = data.size // _LANES
    columns = np.ascontiguousarray(data.reshape(_LANES, m).T)  # row j = byte j of every lane
    regs = np.zeros(_LANES, np.uint32)
    regs[0] = state
    eight = np.uint32(8)
    for row in columns:
        regs = TABLE[(regs ^ row) & 0xFF] ^ (regs >> eight)
    # shift[k] = the register after m zero bytes from the state with only bit k set
    shift = np.left_shift(np.uint32(1), np.arange(32, dtype=np.uint32))
    for _ in range(m):
        shift = TABLE[shift & 0xFF] ^ (shift >> eight)
    shift = [int(v) for v in shift]
    out = int(regs[0])
    for r in regs[1:].tolist():
        moved = 0
        k = 0
        while out:
            if out & 1:
                moved ^= shift[k]
            out >>= 1
            k += 1
        out = moved ^ r
    return out


def crc32c(data) -> int:
    """CRC-32C of ``data`` (bytes, memoryview or a uint8 array)."""
    buf = np.frombuffer(memoryview(data).cast("B"), np.uint8)
    state = 0xFFFFFFFF
    body = buf.size - buf.size % _LANES if buf.size >= _SMALL else 0
    if body:
        state = _update_lanes(buf[:body], state)
    state = _update(state, buf[body:].tobytes())
    return state ^ 0xFFFFFFFF


def mask(crc: int) -> int:
    """The masked form LevelDB and TensorFlow store (rotate right by 15, add a constant)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + MASK_DELTA) & 0xFFFFFFFF


def masked_crc32c(data) -> int:
    return mask(crc32c(data))
