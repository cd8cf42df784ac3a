"""The child process of ``python -m bench memory``: one configuration measured, one JSON line printed.

    python bench/memory_child.py SPEC

bench_memory runs this file as a script in a fresh interpreter for every
measurement (not with ``-m``, which would import the ``bench`` package and
runpy first, and not from the repository's directory). Before each step is
measured it imports nothing from this repository, and NumPy only from the
second step on.

SPEC is a JSON object:

- ``mode``: ``stages`` (load the model, call it twice), ``detail`` (the same
  with the first call taken apart: LLVM, Numba's runtime and lowering
  registries, each cached kernel specialization as it loads), ``floor`` (no
  Numba: NumPy, the weights read, an arena-sized buffer), ``native`` (as
  ``stages``, on the native kernel library: run with ``MBENGINE_KERNELS=native``
  and ``MBENGINE_NATIVE_DIR``), ``ort`` (an ONNX Runtime session, called twice)
  or ``litert`` (a LiteRT interpreter, XNNPACK, tensors allocated, called twice);
- ``path``: the engine checkpoint (``stages``, ``detail``, ``floor``, ``native``), ``cls``:
  its mbengine model class, ``onnx``: the ONNX file (``ort``), ``tflite``: the
  .tflite file (``litert``; its directory counts as the weights in the RSS split:
  LiteRT memory-maps the model), ``threads``: the interpreter's num_threads
  (``litert``);
- ``batch``, ``seq`` (default 1 x 128), ``arena_bytes`` (``floor``);
- ``hide_scipy``: make ``import scipy`` fail, as where SciPy is not installed;
- ``skip_nrt``: an experiment that patches Numba to register its runtime's C
  helpers without compiling them.

After every step: VmRSS, VmHWM, RssAnon and RssFile (MiB, /proc/self/status),
the RSS split by mapping (/proc/self/smaps, see :func:`category`) and the
step's seconds. The JSON line holds the steps and, for mbengine, the kernel
specializations loaded, the arena block size, the dtype and the threading layer.
"""

import json
import os
import sys
import time

# what :func:`category` sorts the mappings into (the columns of bench_memory's tables, in order)
CATEGORIES = (
    "weights (mmap'd checkpoint)",
    "libllvmlite.so (LLVM)",
    "numba .so",
    "NumPy + OpenBLAS .so",
    "SciPy .so",
    "Python (interpreter, stdlib .so)",
    "heap + anonymous",
    "other",
)


def status() -> dict:
    """VmRSS, VmHWM, RssAnon, RssFile of this process in MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = round(int(val.split()[0]) / 1024, 1)
    return out


def category(path: str, weights: str | None) -> str:
    """Which part of the process a mapping of ``path`` belongs to (``weights``: the checkpoint directory + /)."""
    if not path or path == "[heap]" or path.startswith("[stack"):
        return "heap + anonymous"
    if path.startswith("["):
        return "other"
    if weights and os.path.realpath(path).startswith(weights):
        return "weights (mmap'd checkpoint)"
    if path.endswith("libllvmlite.so"):
        return "libllvmlite.so (LLVM)"
    if "/numba/" in path:
        return "numba .so"
    if "/numpy/" in path or "/numpy.libs/" in path:
        return "NumPy + OpenBLAS .so"
    if "/scipy/" in path or "/scipy.libs/" in path:
        return "SciPy .so"
    base = os.path.basename(path)
    if base.startswith("libpython") or "/lib-dynload/" in path or base.startswith("python3"):
        return "Python (interpreter, stdlib .so)"
    return "other"


def split(weights: str | None) -> dict:
    """RSS (MiB) per :func:`category`, summed over /proc/self/smaps."""
    kib, cat = {}, None
    with open("/proc/self/smaps") as f:
        for line in f:
            if not line[0].isupper():  # a mapping's header line
                parts = line.split(None, 5)
                cat = category(parts[5].strip() if len(parts) > 5 else "", weights)
            elif line.startswith("Rss:"):
                kib[cat] = kib.get(cat, 0) + int(line.split()[1])
    return {k: round(v / 1024, 1) for k, v in kib.items()}


class Steps(list):
    """The measurements so far; ``steps(label, seconds)`` measures the process now and appends them."""

    def __init__(self, weights: str | None):
        super().__init__()
        self.weights = weights

    def __call__(self, label: str, seconds: float | None = None) -> None:
        self.append({"step": label, **status(), "split": split(self.weights), "seconds": seconds})


def floor(spec: dict, step: Steps) -> dict:
    """No Numba: the checkpoint's weights mapped and every page read, then an arena-sized buffer written."""
    import numpy as np

    from mbengine.safetensors_mmap import load

    tensors, _ = load(os.path.join(spec["path"], "model.safetensors"), to_float32=False)
    sum(int(t.reshape(-1).view(np.uint8)[::4096].sum()) for t in tensors.values())
    step("weights mapped and every page read")
    arena = np.ones(spec["arena_bytes"] // 4, np.float32)
    step("arena-sized buffer written")
    del tensors, arena
    return {}


def onnxruntime_session(spec: dict, step: Steps, ids) -> dict:
    """ONNX Runtime: the session created, then called twice."""
    import numpy as np
    import onnxruntime as ort

    step("import onnxruntime")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(spec["onnx"], sess_options=so, providers=["CPUExecutionProvider"])
    step("session created")
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    feed = {i.name: feed[i.name] for i in sess.get_inputs()}
    sess.run(None, feed)
    step("first call")
    sess.run(None, feed)
    step("second call")
    return {}


def litert_interpreter(spec: dict, step: Steps, ids) -> dict:
    """LiteRT: the interpreter created (XNNPACK delegate, the default), its tensors allocated, then called twice.

    Inputs are matched by name (the converter's signature names, which TFLite prefixes) and cast to
    the model's input dtype (int32), as bench.litert.feed_for does (not imported: see the module's docstring).
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    step("import ai_edge_litert")
    t0 = time.perf_counter()
    interpreter = Interpreter(model_path=spec["tflite"], num_threads=spec["threads"])
    step("interpreter created", time.perf_counter() - t0)
    t0 = time.perf_counter()
    interpreter.allocate_tensors()
    step("tensors allocated", time.perf_counter() - t0)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    inputs = []
    for d in interpreter.get_input_details():
        (name,) = [n for n in feed if n in d["name"]]
        inputs.append((d["index"], feed[name].astype(d["dtype"])))
    output = interpreter.get_output_details()[0]["index"]

    def call():
        for index, array in inputs:
            interpreter.set_tensor(index, array)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    t0 = time.perf_counter()
    call()
    step("first call", time.perf_counter() - t0)
    t0 = time.perf_counter()
    call()
    step("second call", time.perf_counter() - t0)
    return {"threads": spec["threads"], "input_dtypes": sorted({str(a.dtype) for _, a in inputs})}


def _skip_nrt_compile() -> None:
    """Experiment: Numba's runtime registers its C helpers but compiles nothing (Numba patched)."""
    import llvmlite.binding as ll
    from numba.core.runtime import _nrt_python, rtsys

    def _init(self, ctx):
        if not self._init:
            for name, addr in _nrt_python.c_helpers.items():
                ll.add_symbol(name if name.startswith("_") else "NRT_" + name, addr)
            self._init = True

    type(rtsys).initialize = _init


def _kernels() -> list:
    """Every Numba dispatcher defined in mbengine.kernels."""
    import importlib
    import pkgutil

    from numba.core.dispatcher import Dispatcher

    import mbengine.kernels as K

    kernels = []
    for info in pkgutil.iter_modules(K.__path__):
        for obj in vars(importlib.import_module("mbengine.kernels." + info.name)).values():
            if isinstance(obj, Dispatcher) and obj not in kernels:
                kernels.append(obj)
    return kernels


def engine(spec: dict, step: Steps, ids) -> dict:
    """mbengine (``stages`` or ``detail``): imports, load, first and second call."""
    detail = spec["mode"] == "detail"
    if detail:
        import llvmlite.binding  # noqa: F401  (measured: LLVM loaded before Numba)

        step("import llvmlite.binding")
    import numba

    step("import numba")
    if spec.get("skip_nrt"):
        _skip_nrt_compile()
    if detail:
        from numba.core.registry import cpu_target

        ctx = cpu_target.target_context
        step("Numba codegen created (LLVM target machine, JIT)")
    import mbengine

    step("import mbengine (lazy)")
    import mbengine.modeling

    step("import mbengine.modeling (kernels defined)")
    t0 = time.perf_counter()
    model = getattr(mbengine, spec["cls"]).from_pretrained(spec["path"])
    step("model loaded", time.perf_counter() - t0)
    kernels = _kernels()

    def specializations():
        return sum(len(k.overloads) for k in kernels)

    t0 = time.perf_counter()
    if detail:
        from numba.core.runtime import rtsys

        rtsys.initialize(ctx)
        step("Numba runtime initialised (NRT helpers compiled by LLVM)", time.perf_counter() - t0)
        t0 = time.perf_counter()
        ctx.refresh()
        step("Numba lowering registries imported (SciPy's linalg too, if installed)", time.perf_counter() - t0)
        runner = model.runner()
        inputs = model.check_inputs(ids)
        seen = [specializations()]

        def observe(op, arena):
            n = specializations()
            if n != seen[0]:
                names = sorted(k.py_func.__name__ for k in kernels if k.overloads)
                step(f"op {op.name}: +{n - seen[0]} cached specialization(s), {n} in all")
                step[-1]["kernels"] = names
                seen[0] = n

        t0 = time.perf_counter()
        with mbengine.modeling._threads(model.threads):
            runner.run(*inputs, collect=lambda arena: None, observe=observe)
        step("first call done", time.perf_counter() - t0)
    else:
        model(ids)
        step("first call (kernels from the cache)", time.perf_counter() - t0)
    t0 = time.perf_counter()
    model(ids)
    step("second call", time.perf_counter() - t0)
    result = {
        "specializations": {k.py_func.__name__: len(k.overloads) for k in kernels if k.overloads},
        "arena_block_bytes": model.runner().block_bytes,
        "dtype": model.dtype,
    }
    try:
        result["threading_layer"] = numba.threading_layer()
    except ValueError:
        result["threading_layer"] = None
    result["numba_threads"] = numba.config.NUMBA_NUM_THREADS
    return result


def native(spec: dict, step: Steps, ids) -> dict:
    """mbengine on its native kernel library (``MBENGINE_KERNELS=native`` in the environment): Numba and
    llvmlite never imported."""
    import mbengine

    step("import mbengine (lazy)")
    t0 = time.perf_counter()
    model = getattr(mbengine, spec["cls"]).from_pretrained(spec["path"])
    step("model loaded (native library loaded)", time.perf_counter() - t0)
    t0 = time.perf_counter()
    model(ids)
    step("first call", time.perf_counter() - t0)
    t0 = time.perf_counter()
    model(ids)
    step("second call", time.perf_counter() - t0)
    return {
        "kernels": model.runner().kernels.name,  # (a model whose calls the library lacks runs on Numba)
        "numba_loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("numba", "llvmlite")),
        "arena_block_bytes": model.runner().block_bytes,
        "dtype": model.dtype,
    }


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    if spec.get("hide_scipy"):
        sys.modules["scipy"] = None  # import scipy fails, as where SciPy is not installed
    weights = spec.get("path") or (os.path.dirname(spec["tflite"]) if spec.get("tflite") else None)
    step = Steps(os.path.realpath(weights) + os.sep if weights else None)
    step("bare interpreter")
    import numpy as np

    step("import numpy")
    ids = np.random.default_rng(0).integers(1000, 30000, (spec.get("batch", 1), spec.get("seq", 128)))
    if spec["mode"] == "floor":
        result = floor(spec, step)
    elif spec["mode"] == "ort":
        result = onnxruntime_session(spec, step, ids)
    elif spec["mode"] == "litert":
        result = litert_interpreter(spec, step, ids)
    elif spec["mode"] == "native":
        result = native(spec, step, ids)
    else:
        result = engine(spec, step, ids)
    result["scipy_loaded"] = any(m == "scipy" or m.startswith("scipy.") for m in sys.modules if sys.modules[m])
    result["steps"] = list(step)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
