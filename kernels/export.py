"""Build the native kernel library that :mod:`.native` loads (needs Numba and a C compiler).

For each kernel specialisation (a kernel and the kinds of its arguments,
:func:`.native.kinds`), a C-callable wrapper is compiled with ``numba.cfunc``:
it takes one int64 argument block (each array as a data pointer and its shape,
each scalar as one word), rebuilds the arrays with ``numba.carray`` and calls
the kernel, which Numba compiles and links into the wrapper's code library as
it would for a Python call. The wrapper's final, optimised LLVM module is then
emitted as position-independent object code for the CPU Numba targets (same CPU
name and features as its JIT, so the same instructions: outputs are
bit-identical to the Numba path), and all objects are linked by the system's C
compiler (``cc``) into one shared library with :func:`trampolines` for the
symbols Numba's runtime provides. A wrapper whose code holds an address of
this process (Numba's "dynamic globals", which also keep a function out of its
cache: ``numba.get_num_threads()`` called inside a kernel is one, which is why
the float32 linear takes ``threads`` as an argument) is left out with a warning and listed
as ``unportable`` in the manifest: loaded elsewhere it would jump anywhere.

Numba internals used here, all checked at build time (a failure is an error
here, never a wrong library): a cfunc's ``_library`` with ``_final_module``
and ``has_dynamic_globals``, and its codegen's host CPU name and features; the symbol tables Numba hands
LLVM (``_helperlib.c_helpers``, ``_dynfunc.c_helpers``,
``_nrt_python.c_helpers``, the threading layer's published functions).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np

from . import native
from .layout import compiled

# What Numba's parallel.py binds each threading-layer symbol to (the layer module's attribute)
_THREADING = {
    "numba_parallel_for": "parallel_for",
    "do_scheduling_signed": "do_scheduling_signed",
    "do_scheduling_unsigned": "do_scheduling_unsigned",
    "allocate_sched": "allocate_sched",
    "deallocate_sched": "deallocate_sched",
    "get_num_threads": "get_num_threads",
    "set_num_threads": "set_num_threads",
    "get_thread_id": "get_thread_id",
    "set_parallel_chunksize": "set_parallel_chunksize",
    "get_parallel_chunksize": "get_parallel_chunksize",
    "get_sched_size": "get_sched_size",
}
_LAYERS = {"omp": "numba.np.ufunc.omppool", "tbb": "numba.np.ufunc.tbbpool", "workqueue": "numba.np.ufunc.workqueue"}


def kernel(name: str):
    """The Numba dispatcher of ``"module.function"`` (a kernel of this package)."""
    import importlib

    module, _, fn = name.partition(".")
    return getattr(importlib.import_module(f"{__package__}.{module}"), fn)


def _block_readers():
    """Numba intrinsics the wrappers read their argument block with: an int64 word as a data pointer,
    and as the float64 of the same bits."""
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic
    def address(typingctx, word):
        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], cgutils.voidptr_t)

        return types.voidptr(types.int64), codegen

    @intrinsic
    def double(typingctx, word):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.DoubleType())

        return types.float64(types.int64), codegen

    return address, double


def wrapper(name: str, kinds: list):
    """The ``numba.cfunc`` calling kernel ``name`` with arguments of ``kinds``, read from one int64
    argument block (:meth:`.native.Library.bind_all` lays it out): an array is its data pointer then its
    dimensions, an integer itself, a float its float64's bits (a float32 converted back)."""
    from numba import carray, cfunc, types

    call, w = [], 0
    for k in kinds:
        if k[0] == "array":
            dims = ", ".join(f"block[{w + 1 + d}]" for d in range(k[2]))
            call.append(f"carray(address(block[{w}]), ({dims},), np.{k[1]})")
            w += 1 + k[2]
        elif k[1] == "int64":
            call.append(f"block[{w}]")
            w += 1
        else:  # a float: its float64 bits, converted back to float32 when that is its type (exactly)
            call.append(f"double(block[{w}])" if k[1] == "float64" else f"np.{k[1]}(double(block[{w}]))")
            w += 1
    fn = "mbengine_" + name.replace(".", "_")
    source = f"def {fn}(block):\n    kernel({', '.join(call)})\n"
    address, double = _block_readers()
    scope = {"kernel": kernel(name), "carray": carray, "np": np, "address": address, "double": double}
    exec(compile(source, f"<mbengine native wrapper {name}>", "exec"), scope)  # noqa: S102 (generated above)
    return cfunc(types.void(types.CPointer(types.int64)))(scope[fn])


def object_code(cf) -> bytes:
    """The wrapper's optimised module as position-independent object code for Numba's CPU."""
    import llvmlite.binding as llvm

    library = cf._library
    library._ensure_finalized()
    codegen = library._codegen
    machine = llvm.Target.from_triple(llvm.get_process_triple()).create_target_machine(
        cpu=codegen._get_host_cpu_name(), features=codegen._tm_features, opt=3, reloc="pic", codemodel="default"
    )
    return machine.emit_object(library._final_module)


def runtime_symbols() -> tuple[str, dict]:
    """(threading layer module, {symbol: (extension module, "attr" | "c_helpers", name)}): where Numba's
    runtime symbols come from, as Numba itself binds them for its JIT."""
    import numba
    from numba import _dynfunc, _helperlib
    from numba.core.runtime import _nrt_python
    from numba.np.ufunc import parallel

    parallel._launch_threads()
    layer = _LAYERS[numba.threading_layer()]
    table = {c: (layer, "attr", attr) for c, attr in _THREADING.items()}
    for module, helpers in (("numba._helperlib", _helperlib.c_helpers), ("numba._dynfunc", _dynfunc.c_helpers)):
        table.update({"numba_" + k: (module, "c_helpers", k) for k in helpers})
    for k in _nrt_python.c_helpers:
        table[k if k.startswith("_") else "NRT_" + k] = ("numba.core.runtime._nrt_python", "c_helpers", k)
    return layer, table


def trampolines(names: list[str], arch: str) -> str:
    """Assembly: each of ``names`` a function that jumps through its slot of ``mbengine_slots``.

    A tail jump passes every argument and the return through untouched, so the
    trampoline needs no signature. x86-64 and aarch64 (what the kernels target)."""
    lines = ["\t.text"]
    for i, name in enumerate(names):
        lines += [f"\t.globl {name}", f"\t.type {name}, %function", "\t.p2align 4", f"{name}:"]
        if arch in ("x86_64", "amd64"):
            lines.append(f"\tjmp *.Lslots+{8 * i}(%rip)")
        elif arch in ("aarch64", "arm64"):
            lines += [f"\tadrp x16, .Lslots+{8 * i}", f"\tldr x16, [x16, #:lo12:.Lslots+{8 * i}]", "\tbr x16"]
        else:
            raise NotImplementedError(f"native kernel library: no trampolines for {arch}")
        lines.append(f"\t.size {name}, .-{name}")
    lines += ["\t.data", "\t.globl mbengine_slots", "\t.p2align 3", "mbengine_slots:", ".Lslots:"]
    lines += [f"\t.zero {8 * max(1, len(names))}", '\t.section .note.GNU-stack,"",%progbits']
    return "\n".join(lines) + "\n"


def _undefined(obj: Path) -> list[str]:
    out = subprocess.run(["nm", "-u", str(obj)], capture_output=True, text=True, check=True).stdout
    return [line.split()[-1] for line in out.splitlines() if line.strip()]


def build(specs, directory: Path | None = None, cc: str | None = None) -> Path:
    """Compile and link the library for ``specs`` (pairs of kernel name and argument kinds, merged with
    those of an existing library of the same key) into ``directory`` (default: the first writable of
    :func:`.native.directories`); returns the manifest's path."""
    fp = native.fingerprint()
    key = native.key(fp)
    wanted = {}
    for name, kinds in specs:
        wanted[(name, native._freeze(kinds))] = (name, [list(k) for k in kinds])
    directory = directory or _writable([Path(d) for d in native.directories()])
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path = directory / f"kernels-{key}.json"
    if manifest_path.exists():
        try:
            old = json.loads(manifest_path.read_text())
            known = {(s["name"], native._freeze(s["kinds"])) for s in old["kernels"] + old.get("unportable", [])}
            for spec in old["kernels"]:
                wanted.setdefault((spec["name"], native._freeze(spec["kinds"])), (spec["name"], spec["kinds"]))
            if set(wanted) <= known:
                return manifest_path  # nothing new
        except (OSError, ValueError, KeyError):
            pass
    cc = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("building the native kernel library needs a C compiler (cc, gcc or clang) on PATH")
    layer, table = runtime_symbols()
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        tmp = Path(tmp)
        objects, kernels, undefined, unportable = [], [], set(), []
        for i, (name, kinds) in enumerate(sorted(wanted.values(), key=lambda s: (s[0], str(s[1])))):
            cf = wrapper(name, kinds)
            if cf._library.has_dynamic_globals:
                # an address of this process is baked into the code (what also keeps Numba from caching
                # it, e.g. numba.get_num_threads() called in a kernel): in another process it would
                # jump anywhere. Left out, that kernel runs on Numba there (.native warns which).
                warnings.warn(
                    f"kernel {name} holds an address of the compiling process (Numba: 'dynamic globals'); "
                    "left out of the native library, it runs on Numba",
                    RuntimeWarning,
                    stacklevel=2,
                )
                unportable.append({"name": name, "kinds": kinds})
                continue
            obj = tmp / f"k{i}.o"
            obj.write_bytes(object_code(cf))
            objects.append(obj)
            undefined.update(_undefined(obj))
            kernels.append({"name": name, "kinds": kinds, "symbol": cf.native_name})
        routed = sorted(s for s in undefined if s in table)
        (tmp / "slots.s").write_text(trampolines(routed, platform.machine()))
        so = tmp / "lib.so"
        cmd = [cc, "-shared", "-o", str(so), *map(str, objects), str(tmp / "slots.s"), "-lm", "-Wl,-Bsymbolic"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"linking the native kernel library failed ({' '.join(cmd)}):\n{done.stderr}")
        library = f"kernels-{key}.so"
        manifest = {
            "fingerprint": fp,
            "library": library,
            "layout": compiled().to_json(),
            "threading_layer": next(k for k, v in _LAYERS.items() if v == layer),
            "threading_module": layer,
            "slots": [[s, *table[s]] for s in routed],
            "kernels": kernels,
            "unportable": unportable,
        }
        # the library first, under its final name, then the manifest that names it: a reader never
        # sees a manifest without its library (a library being replaced stays mapped where loaded)
        os.replace(so, directory / library)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        os.replace(tmp / "manifest.json", manifest_path)
    _prune(directory, fp)
    return manifest_path


def _prune(directory: Path, fp: dict) -> None:
    """Remove the libraries in ``directory`` that only older kernel sources can use (same Numba, Python, CPU
    and settings, other sources or library format): each upgrade or edit of the kernels would otherwise
    leave one behind."""
    for path in directory.glob("kernels-*.json"):
        try:
            other = json.loads(path.read_text())["fingerprint"]
        except (OSError, ValueError, KeyError):
            continue
        if _outside_code(other) == _outside_code(fp) and other != fp:
            for stale in (path, path.with_suffix(".so")):
                stale.unlink(missing_ok=True)


def _outside_code(fp: dict) -> dict:
    """A fingerprint without what this package's code decides (its kernel sources, the library format)."""
    return {k: v for k, v in fp.items() if k not in ("sources", "format")}


def _writable(candidates: list[Path]) -> Path:
    for d in candidates:
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=d)
            probe.close()
            return d
        except OSError:
            continue
    raise RuntimeError(f"no writable folder for the native kernel library among {', '.join(map(str, candidates))}")
