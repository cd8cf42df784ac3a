"""What the operating system lets this process use, asked without Numba (the native library's processes ask too)."""

import functools
import os
import sys


@functools.cache
def amx_granted() -> bool:
    """Whether this process may use AMX tiles (the ``amx`` int8 variant, :mod:`.amx`): Linux on x86-64
    grants them only to a process that asks (``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``,
    kernel 5.16 and later), and a tile instruction before that is SIGILL. Asks once; False where the
    kernel refuses, predates AMX or is not Linux on x86-64."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return False
    import ctypes

    arch_prctl, req_xcomp_perm, xtiledata = 158, 0x1023, 18  # (SYS_arch_prctl on x86-64, asm/prctl.h)
    try:
        return ctypes.CDLL(None, use_errno=True).syscall(arch_prctl, req_xcomp_perm, xtiledata) == 0
    except (OSError, AttributeError):
        return False
