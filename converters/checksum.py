"""Masked CRC-32C (Castagnoli), as LevelDB tables and TensorFlow tensor bundles store it.

TensorFlow checks its checkpoints with CRC-32C: every SSTable block trailer and
every tensor's ``BundleEntryProto.crc32c`` hold the *masked* CRC of the bytes
(:func:`mask`). The CRC itself comes from ``google-crc32c`` (the ``tf`` extra),
Google's C library with hardware CRC instructions on x86-64 and aarch64.
"""

from __future__ import annotations

from mbengine.errors import CheckpointError

MASK_DELTA = 0xA282EAD8


def require(path: str) -> None:
    """A CheckpointError naming ``path`` when google-crc32c is not installed."""
    try:
        import google_crc32c  # noqa: F401
    except ImportError:
        raise CheckpointError(
            f"{path}: reading a TensorFlow checkpoint needs google-crc32c (its checksums), "
            "which is not installed: pip install google-crc32c (or pip install "
            "'mbengine[tf]')"
        ) from None


def crc32c(data) -> int:
    """CRC-32C of ``data`` (bytes, memoryview or a uint8 array)."""
    import google_crc32c

    # the C extension takes only read-only buffers such as bytes (one transient copy)
    return google_crc32c.value(data if isinstance(data, bytes) else memoryview(data).tobytes())


def mask(crc: int) -> int:
    """The masked form LevelDB and TensorFlow store (rotate right by 15, add a constant)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + MASK_DELTA) & 0xFFFFFFFF


def masked_crc32c(data) -> int:
    return mask(crc32c(data))
