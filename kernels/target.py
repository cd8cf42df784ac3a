"""The CPU Numba compiles the kernels for: its name, vector width and int8 instructions.

The kernels' geometry (float32 lanes per vector, rows per register tile) and
the int8 micro-kernel (:mod:`.qsimd`) follow the *compile target*, which is
the host unless ``NUMBA_CPU_NAME`` names another CPU (to build a cache for
a Raspberry Pi 4 on a laptop, say, or to measure another x86 generation on
this machine).

Numba itself, given ``NUMBA_CPU_NAME`` without ``NUMBA_CPU_FEATURES``, pairs
the named CPU with the *host's* features (``haswell`` plus AVX-512 on an
AVX-512 host): code that would not run on the named CPU. So when the kernels
are imported before Numba has compiled anything, a named CPU without a
feature list gets that CPU's own features (Numba's ``CPU_FEATURES = ""``,
which LLVM reads as "the CPU's defaults"). Features listed explicitly are
kept as given.

What a named target has is asked of LLVM itself: a few lines of IR are
compiled for it and the assembly is read (a 16-lane float add stays in one
``zmm`` register only with AVX-512, a 64-lane byte add only with AVX-512BW,
a 16-bit multiply-add plus accumulate becomes ``vpdpwssd`` only with VNNI,
a partial reduction of byte products becomes ``sdot`` only with the
dot-product extension). The probes are plain IR that every target can
compile (the aarch64 dot-product probe only where a NEON probe found NEON:
without it LLVM aborts on it), and no table of CPU names goes stale. For
the host, LLVM's host feature list is read directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import llvmlite.binding as llvm


@dataclass(frozen=True)
class Target:
    """What the kernels are compiled for (see the module doc)."""

    cpu: str  # LLVM's CPU name ("host" resolved to the host's name)
    arch: str  # "x86_64", "aarch64" or another LLVM architecture name
    named: bool  # NUMBA_CPU_NAME chose it (not the host)
    lanes: int  # float32 lanes per vector register: 16 (AVX-512), 8 (AVX), 4 (SSE, NEON, other)
    registers: int  # vector registers: 32 (AVX-512, aarch64) or 16
    avx512bw: bool  # 512-bit byte and word instructions (x86)
    avx512vnni: bool  # vpdpbusd (x86)
    amx: bool  # AMX int8 tiles (x86; asked of the host only: a named target has none here)
    avx2: bool  # 256-bit integer instructions (x86)
    ssse3: bool  # pmaddubsw (x86)
    neon: bool  # Advanced SIMD (aarch64; every aarch64 CPU LLVM knows has it)
    dotprod: bool  # sdot (aarch64)

    def describe(self) -> str:
        """One line for ``mbengine info`` and the bench reports."""
        return f"{self.cpu} ({self.arch}{', NUMBA_CPU_NAME' if self.named else ''}), {self.lanes} float32 lanes"


def _double(name: str, vec: str, op: str) -> str:
    """IR of a function that loads a ``vec`` through its pointer, stores back ``op`` of it with itself: the
    registers its assembly uses tell whether the target has vectors that wide for that operation."""
    return (
        f"define void @{name}({vec}* %p) {{\n  %v = load {vec}, {vec}* %p\n  %w = {op} {vec} %v, %v\n"
        f"  store {vec} %w, {vec}* %p\n  ret void\n}}\n"
    )


_X86_PROBES = (
    _double("lanes", "<16 x float>", "fadd")
    + _double("bytes", "<64 x i8>", "add")
    + _double("words", "<16 x i16>", "add")
    + r"""
define <16 x i32> @madd(<16 x i32> %acc, <32 x i16> %a, <32 x i16> %b) {
  %x = sext <32 x i16> %a to <32 x i32>
  %y = sext <32 x i16> %b to <32 x i32>
  %m = mul <32 x i32> %x, %y
  %e = shufflevector <32 x i32> %m, <32 x i32> undef, <16 x i32> <i32 0, i32 2, i32 4, i32 6, i32 8, i32 10, i32 12, i32 14, i32 16, i32 18, i32 20, i32 22, i32 24, i32 26, i32 28, i32 30>
  %o = shufflevector <32 x i32> %m, <32 x i32> undef, <16 x i32> <i32 1, i32 3, i32 5, i32 7, i32 9, i32 11, i32 13, i32 15, i32 17, i32 19, i32 21, i32 23, i32 25, i32 27, i32 29, i32 31>
  %s = add <16 x i32> %e, %o
  %r = add <16 x i32> %acc, %s
  ret <16 x i32> %r
}
define <8 x i16> @ubsw(<16 x i8> %a, <16 x i8> %b) {
  %x = zext <16 x i8> %a to <16 x i16>
  %y = sext <16 x i8> %b to <16 x i16>
  %m = mul <16 x i16> %x, %y
  %e = shufflevector <16 x i16> %m, <16 x i16> undef, <8 x i32> <i32 0, i32 2, i32 4, i32 6, i32 8, i32 10, i32 12, i32 14>
  %o = shufflevector <16 x i16> %m, <16 x i16> undef, <8 x i32> <i32 1, i32 3, i32 5, i32 7, i32 9, i32 11, i32 13, i32 15>
  %s = call <8 x i16> @llvm.sadd.sat.v8i16(<8 x i16> %e, <8 x i16> %o)
  ret <8 x i16> %s
}
declare <8 x i16> @llvm.sadd.sat.v8i16(<8 x i16>, <8 x i16>)
"""
)

_ARM_NEON_PROBE = _double("lanes", "<4 x float>", "fadd")

# compiled only where NEON is there: without it LLVM cannot legalise the partial reduction (it aborts)
_ARM_DOT_PROBE = r"""
define <4 x i32> @dot(<4 x i32> %acc, <16 x i8> %a, <16 x i8> %b) {
  %x = sext <16 x i8> %a to <16 x i32>
  %y = sext <16 x i8> %b to <16 x i32>
  %m = mul <16 x i32> %x, %y
  %r = call <4 x i32> @llvm.vector.partial.reduce.add.v4i32.v16i32(<4 x i32> %acc, <16 x i32> %m)
  ret <4 x i32> %r
}
declare <4 x i32> @llvm.vector.partial.reduce.add.v4i32.v16i32(<4 x i32>, <16 x i32>)
"""


def _functions(asm: str) -> dict[str, str]:
    """Assembly text per function name (the lines from its label to the next function's)."""
    out, name = {}, None
    for line in asm.splitlines():
        if line and not line[0].isspace() and line.endswith(":") and not line.startswith("."):
            name = line[:-1]
            out[name] = ""
        elif name:
            out[name] += line + "\n"
    return out


def _probe(triple: str, cpu: str, features: str) -> dict[str, bool | int]:
    """Compile the probes for (triple, cpu, features) and read what the assembly shows."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    arch = triple.split("-")[0]
    if arch != llvm.get_process_triple().split("-")[0]:  # another architecture (tests probe both)
        llvm.initialize_all_targets()  # PyPI's llvmlite builds carry every LLVM target
        llvm.initialize_all_asmprinters()
    tm = llvm.Target.from_triple(triple).create_target_machine(cpu=cpu, features=features, opt=2)

    def compiled(ir_text):
        module = llvm.parse_assembly(ir_text)
        module.triple = triple
        return _functions(tm.emit_assembly(module))

    if arch in ("aarch64", "arm64"):
        neon = ".4s" in compiled(_ARM_NEON_PROBE).get("lanes", "")
        return {
            "lanes": 4,
            "registers": 32,
            "neon": neon,
            "dotprod": neon and "sdot" in compiled(_ARM_DOT_PROBE).get("dot", ""),
        }
    if arch not in ("x86_64", "i686", "i386"):
        return {"lanes": 4, "registers": 16}
    fn = compiled(_X86_PROBES)
    zmm = "zmm" in fn.get("lanes", "")
    return {
        "lanes": 16 if zmm else 8 if "ymm" in fn.get("lanes", "") else 4,
        "registers": 32 if zmm else 16,
        "avx512bw": "vpaddb\t%zmm" in fn.get("bytes", ""),
        "avx512vnni": zmm and "vpdpwssd" in fn.get("madd", ""),
        "avx2": any(
            line.split()[:1] in (["vpaddw"], ["vpsllw"]) and "ymm" in line for line in fn.get("words", "").splitlines()
        ),
        "ssse3": "phaddsw" in fn.get("ubsw", ""),
    }


def _probe_safely(triple: str, cpu: str, features: str) -> dict:
    """:func:`_probe` in a child process: LLVM aborts the process, not raises, on a CPU name it does not know
    for the architecture (seen: 'cortex-a72' on x86-64), which here becomes a clear error instead."""
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), triple, cpu, features], capture_output=True, text=True, timeout=120
    )
    unknown = "not a recognized processor" in proc.stderr
    if proc.returncode != 0 or unknown:
        why = "LLVM does not know that CPU for this architecture" if unknown else "LLVM failed compiling for it"
        raise ValueError(
            f"cannot compile the kernels for NUMBA_CPU_NAME={cpu!r} NUMBA_CPU_FEATURES={features!r} "
            f"on {triple}: {why} ({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'exit ' + str(proc.returncode)})"
        )
    return json.loads(proc.stdout)


def _numba_choice() -> tuple[str | None, str | None]:
    """(CPU name, feature string) as Numba will compile: see the module doc for the named-CPU case."""
    from numba.core import config, registry

    name = config.CPU_NAME if config.CPU_NAME and config.CPU_NAME.lower() != "host" else None
    if name and config.CPU_FEATURES is None and "_toplevel_target_context" not in vars(registry.cpu_target):
        config.CPU_FEATURES = ""  # the named CPU's own features, not the host's (Numba's codegen reads it later)
    if name is None:
        return None, config.CPU_FEATURES
    features = config.CPU_FEATURES
    if features is None:  # Numba's codegen already exists with the host's features: say what it really uses
        from numba.core.codegen import get_host_cpu_features

        features = get_host_cpu_features()
    return name, features


def _host(arch: str) -> dict[str, bool | int]:
    """What :func:`_probe` reports, for the host: from LLVM's host feature list."""
    has = llvm.get_host_cpu_features()
    if arch != "x86_64":  # every aarch64 Linux has NEON (its ABI assumes it); qemu-user hides the feature list
        return {
            "lanes": 4,
            "registers": 32,
            "neon": arch == "aarch64",
            "dotprod": arch == "aarch64" and bool(has.get("dotprod")),
        }
    lanes = 16 if has.get("avx512f") else 8 if has.get("avx") else 4
    return {
        "lanes": lanes,
        "registers": 32 if lanes == 16 else 16,
        **{k: bool(has.get(k)) for k in ("avx512bw", "avx512vnni", "avx2", "ssse3")},
        "amx": bool(has.get("amx-int8") and has.get("amx-tile")),
    }


def detect() -> Target:
    """The target of this process's Numba compiles (see the module doc)."""
    triple = llvm.get_process_triple()
    arch = triple.split("-")[0]
    arch = {"arm64": "aarch64", "amd64": "x86_64"}.get(arch, arch)
    name, features = _numba_choice()
    if name is None and features is None:  # the host, as LLVM sees it
        seen = _host(arch)
    else:
        seen = _probe_safely(triple, name or llvm.get_host_cpu_name(), features or "")
    return Target(
        cpu=name or llvm.get_host_cpu_name(),
        arch=arch,
        named=name is not None,
        lanes=int(seen["lanes"]),
        registers=int(seen["registers"]),
        avx512bw=bool(seen.get("avx512bw")),
        avx512vnni=bool(seen.get("avx512vnni")) and bool(seen.get("avx512bw")),
        amx=bool(seen.get("amx")),
        avx2=bool(seen.get("avx2")),
        ssse3=bool(seen.get("ssse3")),
        neon=bool(seen.get("neon")),
        dotprod=bool(seen.get("dotprod")),
    )


if __name__ == "__main__":  # the child process of _probe_safely: python target.py TRIPLE CPU FEATURES
    print(json.dumps(_probe(*sys.argv[1:4])))
else:
    TARGET = detect()
