"""Every int8 micro-kernel variant through the whole of tests/test_qlinear.py and
tests/test_qattention.py (which runs on the same tiles), and the float32
kernels at every x86 vector width through tests/test_kernels.py.

This machine's own variant runs there in-process. The others need another
compile target, so each runs the file in a subprocess with its own Numba
cache: compiled for other x86 CPUs (``NUMBA_CPU_NAME``; the kernels then take
that CPU's vector width and instructions, see mbengine/kernels/target.py), or
with a variant forced (``MBENGINE_INT8_KERNEL``). Each subprocess first
checks that it got the variant and vector width the target implies. aarch64
variants (sdot, smull) are checked under emulation (bench/aarch64/).
"""

import os
import subprocess
import sys

import pytest

from mbengine.kernels import qsimd
from mbengine.kernels.target import TARGET

HERE = os.path.dirname(os.path.abspath(__file__))
X86 = TARGET.arch == "x86_64"
# what this CPU must have to run code compiled for each named target (its other features
# are older and implied)
NEEDS = {
    "haswell": ("avx2", "fma", "bmi2"),
    "skylake-avx512": ("avx512f", "avx512bw", "avx512vl"),
    "x86-64-v2": ("ssse3", "sse4.2", "popcnt"),
    "x86-64": (),
}

# (environment, expected variant, expected float32 lanes)
CASES = [
    ({"NUMBA_CPU_NAME": "haswell"}, "maddubs", 8),  # AVX2 (Intel 2013-2019 clients, AMD Zen 1-3)
    ({"NUMBA_CPU_NAME": "skylake-avx512"}, "maddubs", 16),  # AVX-512BW without VNNI (Skylake-SP/X)
    ({"NUMBA_CPU_NAME": "x86-64-v2"}, "maddubs", 4),  # SSSE3..SSE4.2, no AVX
    ({"NUMBA_CPU_NAME": "x86-64"}, "generic", 4),  # SSE2 only: the portable fallback
    ({"NUMBA_CPU_NAME": "haswell", "MBENGINE_INT8_KERNEL": "maddubs7"}, "maddubs7", 8),
]
if X86 and qsimd.VARIANT in ("vnni", "amx"):  # the slower x86 variants forced on this VNNI machine
    CASES.append(({"MBENGINE_INT8_KERNEL": "maddubs"}, "maddubs", 16))
if X86 and qsimd.VARIANT == "amx":  # and on an AMX one, the register tiles alone
    CASES.append(({"MBENGINE_INT8_KERNEL": "vnni"}, "vnni", 16))


def missing_features(env) -> list[str]:
    """The features code for ``env``'s target needs that this CPU lacks (it would die of SIGILL)."""
    import llvmlite.binding as llvm

    host = llvm.get_host_cpu_features()
    return [f for f in NEEDS.get(env.get("NUMBA_CPU_NAME"), ()) if not host.get(f, False)]


def run_tests(tmp_path, env, variant, lanes, *test_files):
    missing = missing_features(env)
    if missing:
        pytest.skip(f"this CPU ({TARGET.describe()}) cannot run {env['NUMBA_CPU_NAME']} code: no {', '.join(missing)}")
    full = {
        k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "MBENGINE_INT8_KERNEL")
    }
    full.update(env, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    check = (
        "from mbengine.kernels import qsimd, simd; "
        f"assert (qsimd.VARIANT, simd.LANES) == ({variant!r}, {lanes}), (qsimd.VARIANT, simd.LANES)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", check], env=full, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )  # (not the source tree: its mbengine/ has no kernels/)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            *(os.path.join(HERE, f) for f in test_files),
        ],
        env=full,
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, f"{env}: {test_files} failed\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert " passed" in proc.stdout and " failed" not in proc.stdout


@pytest.mark.skipif(not X86, reason="compiles for other x86 CPUs")
@pytest.mark.parametrize("env, variant, lanes", CASES, ids=[f"{v}-{n}" for _, v, n in CASES])
def test_variant_passes_test_qlinear(tmp_path, env, variant, lanes):
    run_tests(tmp_path, env, variant, lanes, "test_qlinear.py", "test_qattention.py")


FLOAT_CASES = [({"NUMBA_CPU_NAME": "haswell"}, "maddubs", 8), ({"NUMBA_CPU_NAME": "x86-64-v2"}, "maddubs", 4)]


@pytest.mark.skipif(not X86, reason="compiles for other x86 CPUs")
@pytest.mark.parametrize("env, variant, lanes", FLOAT_CASES, ids=[f"lanes{n}" for _, _, n in FLOAT_CASES])
def test_float_kernels_at_other_vector_widths(tmp_path, env, variant, lanes):
    """The float32 kernels' tile geometry follows the target too (6 x 2 vectors with 16 registers)."""
    run_tests(tmp_path, env, variant, lanes, "test_kernels.py")
