"""The native kernel library (mbengine.kernels.native, .export): built by ``mbengine warmup`` and
``convert`` from the Numba kernels, loaded by a process that never imports Numba or llvmlite, and
bit-identical to the Numba kernels. A missing, stale, incomplete or unloadable library falls back to
Numba with one warning and the same outputs.

The library is built once for the module into a temporary folder (``MBENGINE_NATIVE_DIR``); the
native side runs in fresh subprocesses (a process chooses its kernels once), the Numba side here
(conftest sets ``MBENGINE_KERNELS=numba`` for the test process).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbengine import cli
from mbengine.config import MobileBertConfig
from mbengine.kernels import export, native

# Two small models between them call every kernel: NoNorm + relu + trigram (MobileBERT's own; bottleneck
# linears with fused epilogues, stacked FFNs), and LayerNorm + gelu without trigram or bottleneck (add_norm,
# the gelu epilogue); the int8 one is the first, converted.
CONFIGS = {
    "nonorm": dict(num_feedforward_networks=2),
    "layernorm": dict(
        normalization_type="layer_norm",
        hidden_act="gelu",
        trigram_input=False,
        use_bottleneck=False,
        embedding_size=32,
        intra_bottleneck_size=32,
    ),
}


def _config(**extra) -> MobileBertConfig:
    base = dict(
        vocab_size=300,
        hidden_size=32,
        embedding_size=16,
        intra_bottleneck_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=128,
    )
    return MobileBertConfig(**{**base, **extra})


# What each model is asked, in the native subprocess and here alike: padded (the padding computed), a
# ragged batch (padding skipped), attention probabilities and hidden states, on 1 and 2 threads.
CALLS = """
import numpy as np
def calls(model):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 300, (3, 11))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    out = {}
    for threads in (1, 2):
        model.threads = threads
        r = model(ids[:1])
        out[f"t{threads}.single"] = r.logits
        r = model(ids, attention_mask=mask)
        out[f"t{threads}.ragged"] = r.logits
        # arenas of one family (they share a frame and, on the native library, one plan) in turn: new
        # lengths and new token counts, then an earlier shape again
        for i, length in enumerate((4, 11, 7, 4)):
            out[f"t{threads}.length{i}"] = model(ids[:1, :length]).logits
        for i, cut in enumerate((5, 9, 5)):
            short = mask.copy()
            short[0, cut:] = 0
            out[f"t{threads}.rows{i}"] = model(ids, attention_mask=short).logits
        model.padding = "compute"
        r = model(ids, attention_mask=mask)
        out[f"t{threads}.padded"] = r.logits
        model.padding = "skip"
        r = model(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
        for i, a in enumerate(r.attentions):
            out[f"t{threads}.attn{i}"] = a
        for i, h in enumerate(r.hidden_states):
            out[f"t{threads}.hidden{i}"] = h
    return out
"""

NATIVE_RUN = """
import json, sys, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import numpy as np
    from mbengine import MobileBertForMaskedLM, backend
    from mbengine.kernels import native
    binds = []  # the plans bound argument by argument (not from a kept image, see mbengine.plans)
    bind_all = native.Library.bind_all
    native.Library.bind_all = lambda self, calls, *a, **k: binds.append(1) or bind_all(self, calls, *a, **k)
    {calls}
    results, kernels = {{}}, {{}}
    for name, path in json.loads(sys.argv[1]).items():
        model = MobileBertForMaskedLM.from_pretrained(path)
        for key, value in calls(model).items():
            results[f"{{name}}.{{key}}"] = value
        kernels[name] = model._runners[False].kernels.name
    np.savez(sys.argv[2], **results)
print(json.dumps({{
    "process": backend.get().name,
    "kernels": kernels,
    "numba_loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("numba", "llvmlite", "scipy")),
    "other_formats_loaded": sorted(
        m for m in sys.modules
        if m.rpartition(".")[2] in ("torch_bin", "tf_h5", "tf_bundle", "publish") and m.startswith("mbengine.")
    ),
    "warnings": [str(w.message) for w in caught],
    "binds": len(binds),
}}))
"""


def _env(directory, mode="native", **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MBENGINE_KERNELS", "MBENGINE_NATIVE_DIR")}
    # (the same interpreter finds mbengine as this process did: no PYTHONPATH to the checkout, whose top-level
    # mbengine/ lacks the kernels and converters an installed package has)
    env.update(MBENGINE_KERNELS=mode, MBENGINE_NATIVE_DIR=str(directory), **extra)
    return env


def run_native(paths: dict, directory, tmp_path, mode="native", **env) -> tuple[dict, dict]:
    """Run CALLS on each checkpoint in a fresh process; (its report, its outputs)."""
    out = tmp_path / "native.npz"
    script = NATIVE_RUN.format(calls=textwrap.indent(CALLS, "    "))
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps({k: str(v) for k, v in paths.items()}), str(out)],
        env=_env(directory, mode, **env),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(out) as f:
        return report, {k: f[k] for k in f.files}


def numba_outputs(paths: dict) -> dict:
    from mbengine import MobileBertForMaskedLM

    scope = {}
    exec(CALLS, scope)
    results = {}
    for name, path in paths.items():
        model = MobileBertForMaskedLM.from_pretrained(str(path))
        for key, value in scope["calls"](model).items():
            results[f"{name}.{key}"] = value
    return results


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(library folder, {name: checkpoint}): float models warmed up, the int8 one converted; each step builds
    (or extends) the native library, as a user's would."""
    root = tmp_path_factory.mktemp("native")
    directory = root / "lib"
    old = os.environ.get("MBENGINE_NATIVE_DIR")
    os.environ["MBENGINE_NATIVE_DIR"] = str(directory)
    try:
        paths = {}
        for name, extra in CONFIGS.items():
            paths[name], _ = cli.demo_checkpoint(str(root / name), _config(**extra))
            assert cli.main(["warmup", paths[name], "--threads", "1"]) == 0
        paths["int8"] = root / "int8"
        assert cli.main(["convert", paths["nonorm"], str(paths["int8"]), "--dtype", "int8"]) == 0
    finally:
        if old is None:
            os.environ.pop("MBENGINE_NATIVE_DIR")
        else:
            os.environ["MBENGINE_NATIVE_DIR"] = old
    return directory, paths


def _manifest(directory) -> tuple[Path, dict]:
    (path,) = Path(directory).glob("kernels-*.json")
    return path, json.loads(path.read_text())


def test_library_holds_every_kernel_the_models_call(built):
    """(No pooler in these masked-LM models: the pooler's gather_rows is built for the models that have one.)"""
    directory, _ = built
    _, manifest = _manifest(directory)
    names = {k["name"] for k in manifest["kernels"]}
    assert names == {
        "attention.attention",
        "embeddings.embed_positions",
        "embeddings.embed_words",
        "linear.linear",
        "norms.add_norm",
        "qlinear.qlinear",
    }
    assert manifest["fingerprint"] == native.fingerprint()
    # every slot names a symbol of Numba's runtime, filled from one of its extension modules
    assert {s[1] for s in manifest["slots"]} <= {
        manifest["threading_module"],
        "numba._helperlib",
        "numba._dynfunc",
        "numba.core.runtime._nrt_python",
    }
    assert "numba_parallel_for" in {s[0] for s in manifest["slots"]}


def test_native_process_never_imports_numba_and_matches_numba_bit_for_bit(built, tmp_path):
    directory, paths = built
    report, got = run_native(paths, directory, tmp_path)
    assert report["process"] == "native"
    assert report["kernels"] == {name: "native" for name in paths}
    assert report["numba_loaded"] == []
    # serving safetensors and engine checkpoints reads no other format and writes nothing: those modules stay out
    assert report["other_formats_loaded"] == []
    assert report["warnings"] == []
    want = numba_outputs(paths)
    assert sorted(got) == sorted(want)
    different = [k for k in want if not np.array_equal(got[k], want[k])]
    assert different == []


def test_a_later_process_binds_no_plan_and_a_broken_image_is_bound_again(built, tmp_path):
    """The plans a process binds on the library are kept (mbengine.plans): the next process with the
    same models binds none, with the same outputs. An image that is not one, or whose roots are too
    small for it, is bound again and written over."""
    directory, paths = built
    run_native(paths, directory, tmp_path)  # (keeps any plan no earlier test's process kept)
    report, got = run_native(paths, directory, tmp_path)
    assert report["binds"] == 0 and report["warnings"] == []
    want = numba_outputs(paths)
    assert [k for k in want if not np.array_equal(got[k], want[k])] == []
    images = sorted((Path(directory) / "plans").glob("plan-*.bin"))
    assert len(images) >= 8  # (per model: single, ragged, padded, probabilities; on 1 and 2 threads)
    for i, image in enumerate(images):  # garbage, a truncated image, one whose first root holds 10 TB
        data = image.read_bytes()
        head, _, rest = data.partition(b"\n")
        if i % 3 == 0:
            image.write_bytes(b"not an image")
        elif i % 3 == 1:
            image.write_bytes(data[:-8])
        else:
            extents = native.Image.from_bytes(data).extents.copy()
            extents[0] = 10**13
            lengths = json.loads(head)["lengths"]
            at = 8 * sum(lengths[:3])  # (template, at, root_of, then extents)
            image.write_bytes(head + b"\n" + rest[:at] + extents.astype("<i8").tobytes() + rest[at + extents.nbytes :])
    report, got = run_native(paths, directory, tmp_path)
    assert report["binds"] == len(images) and report["warnings"] == []
    assert [k for k in want if not np.array_equal(got[k], want[k])] == []
    report, again = run_native(paths, directory, tmp_path)
    assert report["binds"] == 0
    assert [k for k in want if not np.array_equal(again[k], want[k])] == []


def test_other_build_settings_fall_back_to_numba_with_one_warning(built, tmp_path):
    """A library serves only the build it came from: another Numba setting (here NUMBA_BOUNDSCHECK, in the
    fingerprint) finds none, warns once and runs on Numba, with the same outputs."""
    directory, paths = built
    report, got = run_native({"nonorm": paths["nonorm"]}, directory, tmp_path, mode="auto", NUMBA_BOUNDSCHECK="0")
    assert report["process"] == "numba"
    assert len(report["warnings"]) == 1 and "no native kernel library for this build" in report["warnings"][0]
    want = numba_outputs({"nonorm": paths["nonorm"]})
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_unloadable_library_falls_back_or_fails_as_asked(built, tmp_path):
    directory, paths = built
    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    manifest_path, manifest = _manifest(broken)
    (broken / manifest["library"]).write_bytes(b"not a shared library")
    report, got = run_native({"nonorm": paths["nonorm"]}, broken, tmp_path, mode="auto")
    assert report["process"] == "numba"
    assert len(report["warnings"]) == 1 and "cannot load" in report["warnings"][0]
    want = numba_outputs({"nonorm": paths["nonorm"]})
    assert all(np.array_equal(got[k], want[k]) for k in want)
    with pytest.raises(AssertionError, match="MBENGINE_KERNELS=native: cannot load"):
        run_native({"nonorm": paths["nonorm"]}, broken, tmp_path, mode="native")


def test_a_library_with_amx_tiles_is_refused_where_linux_grants_none(built, tmp_path, monkeypatch):
    """A library whose int8 kernels use AMX tiles is not loaded by a process without the grant (its first
    tile instruction would be SIGILL): native.load says why, and the process runs on Numba."""
    directory, _ = built
    amx = tmp_path / "amx"
    shutil.copytree(directory, amx)
    manifest_path, manifest = _manifest(amx)
    manifest["layout"]["variant"] = "amx"
    manifest_path.write_text(json.dumps(manifest))
    monkeypatch.setattr(native, "amx_granted", lambda: False)
    with pytest.raises(OSError, match="AMX tiles, which Linux does not let this process use"):
        native.Library(str(amx / manifest["library"]), manifest)


def test_a_kernel_the_library_lacks_runs_that_model_on_numba(built, tmp_path):
    """A library built for float32 models only: the int8 model runs on Numba (one warning), the float32 one
    in the same process stays native."""
    directory, paths = built
    partial = tmp_path / "partial"
    shutil.copytree(directory, partial)
    manifest_path, manifest = _manifest(partial)
    manifest["kernels"] = [k for k in manifest["kernels"] if k["name"] != "qlinear.qlinear"]
    manifest_path.write_text(json.dumps(manifest))
    sub = {"nonorm": paths["nonorm"], "int8": paths["int8"]}
    report, got = run_native(sub, partial, tmp_path)
    assert report["kernels"] == {"nonorm": "native", "int8": "numba"}
    assert len(report["warnings"]) == 1 and "qlinear.qlinear" in report["warnings"][0]
    want = numba_outputs(sub)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_a_rebuild_with_nothing_new_keeps_the_library(built):
    directory, _ = built
    manifest_path, manifest = _manifest(directory)
    so = directory / manifest["library"]
    stamp = so.stat().st_mtime_ns
    specs = [(k["name"], k["kinds"]) for k in manifest["kernels"][:2]]
    assert export.build(specs, directory) == manifest_path
    assert so.stat().st_mtime_ns == stamp


def test_a_kernel_holding_a_process_address_is_left_out(tmp_path, monkeypatch):
    """A kernel whose code holds an address of the compiling process (numba.get_num_threads() inside
    one: Numba's "dynamic globals", which also keep it out of Numba's cache) would crash another process
    that loads it: the build leaves it out with a warning, the manifest says so (a model calling it runs
    that plan on Numba), and a rebuild for it finds nothing new to do."""
    import numba

    @numba.njit(parallel=True)
    def counts_threads(a):
        t = numba.get_num_threads()
        for i in numba.prange(a.shape[0]):
            a[i] = t

    @numba.njit(parallel=True)
    def portable(a):
        for i in numba.prange(a.shape[0]):
            a[i] = 1.0

    kernels = {"test.counts_threads": counts_threads, "test.portable": portable}
    monkeypatch.setattr(export, "kernel", kernels.__getitem__)
    kinds = [["array", "float64", 1]]
    specs = [("test.counts_threads", kinds), ("test.portable", kinds)]
    with pytest.warns(RuntimeWarning, match="test.counts_threads holds an address of the compiling process"):
        manifest_path = export.build(specs, tmp_path)
    manifest = json.loads(manifest_path.read_text())
    assert [k["name"] for k in manifest["kernels"]] == ["test.portable"]
    assert manifest["unportable"] == [{"name": "test.counts_threads", "kinds": kinds}]
    so = tmp_path / manifest["library"]
    stamp = so.stat().st_mtime_ns
    assert export.build(specs[:1], tmp_path) == manifest_path
    assert so.stat().st_mtime_ns == stamp


def test_build_goes_to_the_first_writable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, so no folder can be made under it")
    assert export._writable([blocker / "native", tmp_path / "cache"]) == tmp_path / "cache"
    with pytest.raises(RuntimeError, match="no writable folder"):
        export._writable([blocker / "a", blocker / "b"])


def test_kinds_describe_what_crosses_the_c_boundary():
    a = np.zeros((2, 3), np.float32)
    assert native.kinds((a, 1, 2.0, np.float32(1))) == [
        ["array", "float32", 2],
        ["scalar", "int64"],
        ["scalar", "float64"],
        ["scalar", "float32"],
    ]
    with pytest.raises(ValueError, match="not C-contiguous"):
        native.kinds((a.T,))
    with pytest.raises(TypeError, match="not an array, an integer or a float"):
        native.kinds((True,))
    # dtype names are memoised by character code, which byte order does not change: a big-endian array
    # must not pass for a native one (no kernel takes it; the model would fall back to Numba)
    assert native.kinds((np.zeros(2, ">f4"), np.zeros(2, "<f4")))[0][1] != "float32"
    assert native.kinds((np.zeros(2, ">f4"), np.zeros(2, "<f4")))[1][1] == "float32"


def _words(bound) -> list:
    """The argument block of a bound call, as Python ints."""
    _, (pointer,) = bound
    start = (pointer.value - pointer._block.ctypes.data) // 8
    return pointer._block[start:].tolist()


def _library(*specialisations) -> native.Library:
    """A library whose functions are stand-ins (binding needs no loaded code)."""
    library = object.__new__(native.Library)
    library._functions = {
        (name, tuple(native._kind(i, a) for i, a in enumerate(args))): name for name, args in specialisations
    }
    return library


def _bits(x: float) -> int:
    return int(np.array(x, np.float64).view(np.int64))


def test_binding_lays_out_each_call_and_remembers_arrays_by_identity_only():
    """A call's argument block holds each array's pointer and shape, each int, each float's float64 bits
    (a float32 converted exactly). A plan binds each distinct array once and remembers the caller's
    lasting ones; what an equal value could misstate is not shared: -0.0 equals 0.0 (floats are bound
    each time), and an ndarray subclass, a NumPy scalar are bound each time (bools are refused)."""
    a, b = np.zeros(3, np.float32), np.zeros((2, 5), np.int8)
    m = a.view(np.matrix)
    args = (a, b, 7, 7, 0.0, -0.0, np.int64(-7), np.float32(0.1), m)
    library = _library(("k.f", args))
    lasting = {}
    (bound,), _ = library.bind_all([("k.f", args)], lasting, frozenset({id(a), id(b), id(m)}))
    assert bound[0] == "k.f"
    assert _words(bound) == [
        a.ctypes.data, 3, b.ctypes.data, 2, 5, 7, 7, _bits(0.0), _bits(-0.0), -7, _bits(float(np.float32(0.1))),
        m.ctypes.data, 1, 3,
    ]  # fmt: skip
    assert set(lasting) == {id(a), id(b)}
    assert library.bind_all([("k.g", args)])[0] == [None]  # a specialisation the library lacks
    with pytest.raises(TypeError, match="not an array, an integer or a float"):
        library.bind_all([("k.f", (True,))])


def test_plans_keep_only_what_their_caller_keeps_alive():
    """A runner's arenas share how its graph's arrays cross to C; an arena's own buffers are not kept
    (once the arena is gone, their ids may belong to other arrays), nor are ints (each its own word)."""
    library = _library()
    weight, buffer = np.ones(4, np.float32), np.zeros(4, np.float32)
    lasting = {}
    assert library.bind_all([("k.f", (weight, buffer, 3, 0.5))], lasting, frozenset({id(weight)}))[0] == [None]
    assert set(lasting) == {id(weight)}
    kept = lasting[id(weight)]
    other = np.zeros(4, np.float32)
    library.bind_all([("k.f", (weight, other, 3, 0.5))], lasting, frozenset({id(weight)}))
    assert lasting[id(weight)] is kept and id(other) not in lasting and id(buffer) not in lasting


def test_resizable_arrays_take_the_dimensions_they_are_given():
    """A frame's arrays are bound with dimensions that Dims.set changes in every call passing them (a
    shared plan then runs on a shorter leading part); nothing else in the blocks changes, and they are
    not kept for other plans."""
    weight, buffer, scratch = np.ones(4, np.float32), np.zeros((6, 4), np.float32), np.zeros(8, np.float32)
    calls = [("k.f", (weight, buffer, 3)), ("k.g", (buffer, scratch, weight)), ("k.f", (weight, buffer, 2))]
    library = _library(calls[0], calls[1])
    lasting = {}
    bound, dims = library.bind_all(calls, lasting, frozenset({id(weight)}), resizable=[buffer, scratch])
    before = [_words(b) for b in bound]
    assert before[1][:5] == [buffer.ctypes.data, 6, 4, scratch.ctypes.data, 8]
    dims.set(np.array([2, 4, 5]))  # buffer (2, 4), scratch (5,)
    after = [_words(b) for b in bound]
    assert after[0][:6] == [weight.ctypes.data, 4, buffer.ctypes.data, 2, 4, 3]
    assert after[1][:6] == [buffer.ctypes.data, 2, 4, scratch.ctypes.data, 5, weight.ctypes.data]
    assert after[2][3:6] == [2, 4, 2]
    assert id(buffer) not in lasting and id(scratch) not in lasting and id(weight) in lasting


@settings(max_examples=40)
@given(st.data())
def test_an_image_binds_the_same_calls_on_roots_elsewhere(data):
    """An image (kernels.native.Image) of a plan, written and read back, binds the same calls made on
    other roots (another process's: here copies at other addresses) exactly as binding them does,
    dimensions that Dims.set changes included; roots too small for it, or a kernel the library lacks,
    and it binds nothing."""
    dtypes = [np.float32, np.int8, np.int64]

    def roots_of(sizes):
        return [np.zeros(n, dtypes[i % 3]) for i, n in enumerate(sizes)]

    sizes = data.draw(st.lists(st.integers(1, 64), min_size=1, max_size=4))
    pieces = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(sizes) - 1), st.integers(0, 63), st.integers(0, 63), st.booleans()),
            min_size=1,
            max_size=12,
        )
    )
    ints = data.draw(st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=12))

    def calls_on(roots):
        """Views of ``roots`` (some 2-D, some resizable), ints and floats, in calls of up to 3 arguments."""
        args, resizable = [], []
        for (r, start, length, two_d), n in zip(pieces, ints):
            root = roots[r]
            start = min(start, root.size - 1)
            view = root[start : start + max(1, min(length, root.size - start))]
            if two_d and view.size % 2 == 0:
                view = view.reshape(2, -1)
            args += [view, n, float(n) / 3]
            if two_d:
                resizable.append(view)
        return [(f"k.f{len(c)}", tuple(c)) for c in (args[i : i + 3] for i in range(0, len(args), 3))], resizable

    first_roots = roots_of(sizes)
    calls, resizable = calls_on(first_roots)
    library = _library(*calls)
    record = {}
    bound, dims = library.bind_all(calls, resizable=resizable, record=record)
    image = native.Image.make(record, [(r, r.ctypes.data) for r in first_roots])
    image = native.Image.from_bytes(image.to_bytes())
    again = roots_of(sizes)  # (the other process's: at other addresses)
    calls_again, resizable_again = calls_on(again)
    want, want_dims = library.bind_all(calls_again, resizable=resizable_again)
    bases = np.array([r.ctypes.data for r in again], np.int64)
    room = np.array([r.nbytes for r in again], np.int64)
    got, got_dims = library.bind_image(image, bases, room)
    assert [_words(b) for b in got] == [_words(b) for b in want]
    shapes = np.array([n for a in resizable_again for n in a.shape], np.int64)
    smaller = np.maximum(shapes - 1, 0)
    got_dims.set(smaller)
    want_dims.set(smaller)
    assert [_words(b) for b in got] == [_words(b) for b in want]
    used = np.flatnonzero(image.extents)
    for r in used:
        small = room.copy()
        small[r] = image.extents[r] - 1
        assert library.bind_image(image, bases, small) is None
    assert library.bind_image(image, bases[:-1], room[:-1]) is None
    assert _library().bind_image(image, bases, room) is None  # (a library lacking the kernels)


def test_an_image_needs_every_pointer_in_a_root_and_refuses_what_is_not_one():
    inside, outside = np.zeros(8, np.float32), np.zeros(4, np.float32)
    calls = [("k.f", (inside[2:], outside, 1))]
    library = _library(*calls)
    record = {}
    library.bind_all(calls, record=record)
    assert native.Image.make(record, [(inside, inside.ctypes.data)]) is None
    image = native.Image.make(record, [(inside, inside.ctypes.data), (outside, outside.ctypes.data)])
    assert image.extents.tolist() == [32, 16]
    data = image.to_bytes()
    head, _, rest = data.partition(b"\n")
    seven = json.dumps({"keys": [], "lengths": [0] * 7}).encode() + b"\n"
    for bad in (data[:-1], b"{}\n", seven, b"x" + data):
        with pytest.raises((ValueError, KeyError, TypeError)):
            native.Image.from_bytes(bad)
    arrays = {n: getattr(image, n).copy() for n in native.Image._ARRAYS}
    arrays["root_of"][:] = 5  # (what from_bytes checks: every index within its table)
    with pytest.raises(ValueError, match="root_of names no entry"):
        native.Image.from_bytes(head + b"\n" + b"".join(a.astype("<i8").tobytes() for a in arrays.values()))
    arrays = {n: getattr(image, n).copy() for n in native.Image._ARRAYS}
    arrays["template"][arrays["at"][0]] = 33  # (a pointer past its root's 32 bytes)
    with pytest.raises(ValueError, match="pointer lies outside its root"):
        native.Image.from_bytes(head + b"\n" + b"".join(a.astype("<i8").tobytes() for a in arrays.values()))


def test_trampolines_jump_through_their_slots():
    x86 = export.trampolines(["f", "g"], "x86_64")
    assert "jmp *.Lslots+0(%rip)" in x86 and "jmp *.Lslots+8(%rip)" in x86
    arm = export.trampolines(["f"], "aarch64")
    assert "br x16" in arm and ":lo12:.Lslots+0" in arm
    with pytest.raises(NotImplementedError):
        export.trampolines(["f"], "riscv64")


def test_a_build_removes_libraries_only_older_sources_can_use(tmp_path):
    fp = native.fingerprint()
    old = {**fp, "sources": "0" * 64}
    other_cpu = {**old, "cpu": "another CPU"}
    old_format = {**fp, "format": fp["format"] - 1}  # (the sources changed with it, or not)
    for name, print_ in (("old", old), ("othercpu", other_cpu), ("oldformat", old_format), ("current", fp)):
        (tmp_path / f"kernels-{name}.json").write_text(json.dumps({"fingerprint": print_}))
        (tmp_path / f"kernels-{name}.so").write_bytes(b"")
    export._prune(tmp_path, fp)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kernels-current.json",
        "kernels-current.so",
        "kernels-othercpu.json",
        "kernels-othercpu.so",
    ]
