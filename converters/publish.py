"""Write a checkpoint directory so that the destination is never missing, partial or mixed.

Everything is written into a staging directory beside the destination
(``.mbengine-convert-<random>``), which is then published in one step:

* the destination does not exist: ``rename(staging, destination)``, atomic;
* it exists: on Linux, ``renameat2(..., RENAME_EXCHANGE)`` swaps the two
  names in one atomic step (Linux 3.15+, on ext4, xfs, btrfs, tmpfs and most
  local filesystems), and the old version, now under the staging name, is
  deleted. Where the exchange is unavailable (another OS, or a filesystem
  without it) the old version is first renamed aside (``<staging>.previous``),
  then the new one into place: two renames with a moment in between where
  the destination is missing, never mixed. A writer killed in that moment
  leaves the old version under the ``.previous`` name, which nothing deletes.

A staging directory belongs to the process that holds an exclusive ``flock``
on its lock file (``<staging>.lock``). A process killed with SIGKILL loses
the lock with its life, so the next publish beside the same destination (or
:func:`clean`) removes whatever a dead one left, and never a live one's: a
staging directory never holds the only copy of a published version.

Permissions follow the umask: the staging directory is made with ``mkdir``,
not ``mkdtemp`` (0700), and the files are given its read/write bits.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import shutil

PREFIX = ".mbengine-convert-"
AT_FDCWD = -100
RENAME_EXCHANGE = 2


def _renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a: str, b: str) -> bool:
    """Swap the names ``a`` and ``b`` atomically; False where the OS or filesystem cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"exchanging {a} and {b}: {os.strerror(err)}")


def _try_lock(path: str) -> int | None:
    """An fd holding an exclusive lock on ``path`` (created if missing), or None if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def clean(parent: str) -> list[str]:
    """Remove the staging directories (and lock files) that dead writers left in ``parent``; return them."""
    removed = []
    try:
        names = os.listdir(parent)
    except FileNotFoundError:
        return removed
    for name in sorted(names):
        path = os.path.join(parent, name)
        if not name.startswith(PREFIX) or name.endswith((".lock", ".previous")):
            continue
        fd = _try_lock(path + ".lock")
        if fd is None:  # a live writer's
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + ".lock")
        finally:
            os.close(fd)
    for name in names:  # lock files whose directory is gone (killed between the two)
        if name.startswith(PREFIX) and name.endswith(".lock") and not os.path.exists(os.path.join(parent, name[:-5])):
            lock = os.path.join(parent, name)
            fd = _try_lock(lock)
            if fd is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock)
                os.close(fd)
    return removed


class Staging:
    """``with Staging(destination) as tmp: <write into tmp>``, then :meth:`publish`; a failure removes ``tmp``."""

    def __init__(self, destination: str):
        self.destination = os.path.abspath(destination)
        self.parent = os.path.dirname(self.destination) or "."
        self.path = None
        self._fd = None

    def __enter__(self) -> str:
        os.makedirs(self.parent, exist_ok=True)
        clean(self.parent)
        while True:
            path = os.path.join(self.parent, PREFIX + secrets.token_hex(8))
            fd = _try_lock(path + ".lock")
            if fd is None:
                continue
            # the lock file may have been unlinked by a cleaner between open and flock: retry with a new name
            if os.path.exists(path + ".lock") and os.fstat(fd).st_ino == os.stat(path + ".lock").st_ino:
                break
            os.close(fd)
        os.mkdir(path)  # mode 0o777 minus the umask
        self.path, self._fd = path, fd
        return path

    def publish(self) -> None:
        """Put the staging directory in the destination's place (module doc)."""
        # files get the umask's permissions too (safetensors writes 0600): the directory, made by
        # mkdir, has 0o777 minus the umask, so its read/write bits are the files'
        mode = os.stat(self.path).st_mode & 0o666
        for name in os.listdir(self.path):
            os.chmod(os.path.join(self.path, name), mode)
        if os.path.lexists(self.destination):
            if exchange(self.path, self.destination):
                shutil.rmtree(self.path)  # the old version, now under the staging name
            else:
                aside = self.path + ".previous"
                os.rename(self.destination, aside)
                os.rename(self.path, self.destination)
                shutil.rmtree(aside)
        else:
            os.rename(self.path, self.destination)

    def __exit__(self, kind, value, tb) -> None:
        try:
            if self.path is not None and os.path.exists(self.path):
                shutil.rmtree(self.path, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path + ".lock")
        finally:
            os.close(self._fd)
