"""The compile target (mbengine/kernels/target.py): what LLVM says each CPU has, and what Numba is told.

The probes are checked against CPUs whose features are public knowledge:
Haswell has AVX2 but no AVX-512; Skylake-SP has AVX-512BW but no VNNI;
Cascade Lake and Ice Lake server add VNNI; Zen 3 has AVX2 only, Zen 4
AVX-512 with VNNI; Cortex-A72 and A53 have no dot-product extension, A76 and
Neoverse N1 have it. The aarch64 probes compile for that architecture here
(llvmlite carries every LLVM target); running aarch64 code is
bench/aarch64's job.
"""

import os
import subprocess
import sys

import pytest

from mbengine.kernels import target

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"


@pytest.mark.parametrize(
    "cpu, lanes, bw, vnni, avx2",
    [
        ("haswell", 8, False, False, True),
        ("znver3", 8, False, False, True),
        ("skylake-avx512", 16, True, False, True),
        ("cascadelake", 16, True, True, True),
        ("icelake-server", 16, True, True, True),
        ("znver4", 16, True, True, True),
        ("x86-64", 4, False, False, False),
        ("x86-64-v2", 4, False, False, False),
    ],
)
def test_x86_probes(cpu, lanes, bw, vnni, avx2):
    seen = target._probe(X86, cpu, "")
    assert (seen["lanes"], seen["avx512bw"], seen["avx512vnni"], seen["avx2"]) == (lanes, bw, vnni, avx2), seen
    assert seen["ssse3"] == (cpu != "x86-64")  # x86-64-v2 is SSSE3..SSE4.2; plain x86-64 is SSE2


def test_x86_probes_follow_feature_lists():
    assert not target._probe(X86, "icelake-server", "-avx512vnni")["avx512vnni"]
    assert target._probe(X86, "haswell", "+avx512f,+avx512bw")["lanes"] == 16


@pytest.mark.parametrize(
    "cpu, dotprod",
    [("cortex-a53", False), ("cortex-a72", False), ("cortex-a76", True), ("neoverse-n1", True), ("generic", False)],
)
def test_aarch64_probes(cpu, dotprod):
    seen = target._probe(ARM, cpu, "")
    assert seen["neon"] and seen["dotprod"] == dotprod and seen["lanes"] == 4, seen


def run(env: dict, code: str, tmp_path) -> subprocess.CompletedProcess:
    full = {
        k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "MBENGINE_INT8_KERNEL")
    }
    full.update(env, NUMBA_CACHE_DIR=str(tmp_path / "nbc"))
    return subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )  # (not the source tree: its mbengine/ has no kernels/)


@pytest.mark.skipif(target.TARGET.arch != "x86_64", reason="names x86 CPUs")
def test_named_cpu_gets_its_own_features(tmp_path):
    """NUMBA_CPU_NAME=haswell alone: Numba is told the CPU's own features (not the host's), so the compiled
    code is 256-bit, and the kernels' geometry says so."""
    code = (
        "from mbengine.kernels import simd, qsimd; from numba.core import config; from numba import njit\n"
        "import numpy as np\n"
        "@njit\ndef f(a):\n    s = 0.0\n    for v in a: s += v\n    return s\n"
        "f(np.ones(64))\n"
        "asm = list(f.inspect_asm().values())[0]\n"
        "print(repr(config.CPU_FEATURES), simd.LANES, simd.ROWS, qsimd.VARIANT, 'zmm' in asm, 'ymm' in asm)"
    )
    proc = run({"NUMBA_CPU_NAME": "haswell"}, code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["''", "8", "6", "maddubs", "False", "True"], proc.stdout


@pytest.mark.skipif(target.TARGET.arch != "x86_64", reason="names x86 and aarch64 CPUs")
def test_unknown_cpu_name_is_a_clear_error(tmp_path):
    """A CPU LLVM does not know for this architecture aborts LLVM itself; the probe runs in a child process,
    so the user gets a Python error naming the setting instead of a dead process."""
    for name in ("cortex-a72", "no-such-cpu"):
        proc = run({"NUMBA_CPU_NAME": name}, "import mbengine.kernels.linear", tmp_path)
        assert proc.returncode == 1, (name, proc.returncode, proc.stderr[-2000:])
        assert f"NUMBA_CPU_NAME={name!r}" in proc.stderr and "LLVM does not know that CPU" in proc.stderr


def test_host_target_describes_itself():
    t = target.TARGET
    assert t.lanes in (4, 8, 16) and t.registers in (16, 32)
    assert t.cpu in t.describe() and f"{t.lanes} float32 lanes" in t.describe()
