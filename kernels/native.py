"""Run the compiled kernels from a native library, without Numba or llvmlite in the process.

Numba compiles the kernels; a process that only serves a model need not carry
the compiler. At warmup, :mod:`.export` wraps every kernel specialisation the
runner calls in a C-callable function (``numba.cfunc``) taking one pointer, to
an int64 block of the call's arguments (each array as its data pointer and
shape): a call crosses ``ctypes`` with one argument, ~0.5 us, instead of ~40,
~3 us (~300 calls per inference). It emits the object code Numba optimised for
this CPU as position-independent code and links it with the system's C
compiler into one shared library, next to a JSON manifest. This module loads
that pair with ``ctypes``: importing it imports neither Numba nor llvmlite
(``python -m bench memory``: ~70 MiB of LLVM code and ~37 MiB of Numba's
modules stay out of the process, and start-up skips ``import numba``).

What the library needs from Numba's runtime at run time is what Numba's own
JIT links against: the parallel loops' thread pool (its ``omppool``, ``tbbpool``
or ``workqueue`` extension, the same shared object Numba would load) and the
helpers of its exception paths (``_helperlib``, ``_nrt_python``). The object
code calls them by name; the library routes each such name through a jump
slot (a two-instruction trampoline, see :func:`.export.trampolines`), and the
loader fills the slots with the addresses those extension modules publish, the
same table Numba hands LLVM. Extension modules are loaded from Numba's
installed package files under their own names, so ``numba/__init__.py`` never
runs. Everything else (libm, libc, the Python C API) the dynamic linker
resolves as for any extension.

A library serves only the exact build it came from: the manifest's key covers
the kernels' sources, the Numba, llvmlite and Python versions, the CPU (from
``/proc/cpuinfo``) and every environment variable that changes what Numba
compiles (:func:`fingerprint`). Anything else, and :func:`load` returns None
with the reason: the caller falls back to the Numba kernels, whose outputs are
bit-identical (tests/test_native.py).
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import json
import os
import struct
import sys

import numpy as np

from .grants import amx_granted
from .layout import Layout

try:  # CPython's own SHA-256 (hashlib would also load OpenSSL: ~3 ms of every serving process's start-up)
    from _sha2 import sha256  # Python 3.12+
except ImportError:
    try:
        from _sha256 import sha256  # Python 3.11
    except ImportError:
        from hashlib import sha256

FORMAT = 2  # of the manifest and of the wrappers (2: one argument block per call)
# environment variables that change the compiled code or the runtime it links against
ENV_KEYS = (
    "NUMBA_CPU_NAME",
    "NUMBA_CPU_FEATURES",
    "NUMBA_OPT",
    "NUMBA_BOUNDSCHECK",
    "NUMBA_THREADING_LAYER",
    "NUMBA_THREADING_LAYER_PRIORITY",
    "MBENGINE_INT8_KERNEL",
)


def _dist_version(package: str) -> str | None:
    """An installed distribution's version, read from its ``.dist-info`` folder name (no import of it)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    site = os.path.dirname(spec.submodule_search_locations[0])
    for name in os.listdir(site):  # (Path.glob compiles a pattern: ~1 ms of start-up)
        if name.startswith(f"{package}-") and name.endswith(".dist-info"):
            return name[len(package) + 1 : -len(".dist-info")]
    return None


def _cpu() -> str:
    """What identifies this CPU's instruction set: /proc/cpuinfo's model and feature lines (Linux),
    else what ``platform`` knows."""
    keys = ("model name", "flags", "features", "cpu implementer", "cpu architecture", "cpu variant", "cpu part")
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        import platform  # (not Linux; ~1 ms of imports a Linux process skips)

        return f"{platform.machine()} {platform.processor()}"
    seen = {}
    for line in lines:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name in keys and name not in seen:
            seen[name] = value.strip()
    return f"{os.uname().machine} " + json.dumps(seen, sort_keys=True)  # (platform.machine() on Linux)


def sources_digest() -> str:
    """SHA-256 over the kernels' source files (every module here)."""
    h = sha256()
    here = os.path.dirname(__file__)
    for name in sorted(n for n in os.listdir(here) if n.endswith(".py")):
        with open(os.path.join(here, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()


def fingerprint() -> dict:
    """Everything a library's code depends on (module doc); two builds with equal fingerprints are equal."""
    return {
        "format": FORMAT,
        "sources": sources_digest(),
        "numba": _dist_version("numba"),
        "llvmlite": _dist_version("llvmlite"),
        "python": sys.implementation.cache_tag,
        "cpu": _cpu(),
        "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
    }


def key(fp: dict) -> str:
    return sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:20]


def directories() -> list[str]:
    """Where libraries are looked for, in order: ``MBENGINE_NATIVE_DIR`` when set, else beside the
    installed kernels (``__pycache__/native``), then the user's cache (``$XDG_CACHE_HOME`` or
    ``~/.cache``, ``mbengine/native``): a read-only install builds into the latter."""
    env = os.environ.get("MBENGINE_NATIVE_DIR")
    if env:
        return [env]
    return [os.path.join(os.path.dirname(__file__), "__pycache__", "native"), user_cache("native")]


def user_cache(name: str) -> str:
    """The user's cache folder for ``name``: ``$XDG_CACHE_HOME`` (else ``~/.cache``) / mbengine / ``name``."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "mbengine", name)


def _load_extension(dotted: str):
    """Load an extension module of an installed package from its file, without importing the package."""
    top, *inner = dotted.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{top} is not installed")
    folder = os.path.join(spec.submodule_search_locations[0], *inner[:-1])
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    for suffix in suffixes:
        path = os.path.join(folder, inner[-1] + suffix)
        if os.path.exists(path):
            break
    else:
        raise ImportError(f"no extension module {dotted} in {folder}")
    name = inner[-1]
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, path, loader=loader))
    loader.exec_module(module)
    return module


def _num_threads() -> int:
    """Numba's default thread count: NUMBA_NUM_THREADS, else the CPUs this process may use."""
    env = os.environ.get("NUMBA_NUM_THREADS")
    if env:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover (not Linux)
        return max(1, os.cpu_count() or 1)


class _Pool:
    """The thread pool of one Numba threading layer extension (once per process: launched once)."""

    launched: dict = {}

    def __init__(self, module_name: str):
        self.module_name = module_name
        pool = _Pool.launched.get(module_name)
        if pool is None:
            pool = _load_extension(module_name)
            self.threads = _num_threads()
            ctypes.CFUNCTYPE(None, ctypes.c_int)(pool.launch_threads)(self.threads)
            _Pool.launched[module_name] = (pool, self.threads)
        else:
            pool, self.threads = pool
        self.module = pool
        self._set = ctypes.CFUNCTYPE(None, ctypes.c_int)(pool.set_num_threads)
        self._get = ctypes.CFUNCTYPE(ctypes.c_int)(pool.get_num_threads)

    def set_num_threads(self, n: int) -> None:
        """For the calling thread, as numba.set_num_threads."""
        if not 1 <= n <= self.threads:
            raise ValueError(f"threads must be in [1, {self.threads}] (NUMBA_NUM_THREADS), got {n}")
        self._set(n)

    def get_num_threads(self) -> int:
        n = self._get()
        return n if n > 0 else self.threads


_SCALARS = ("int64", "float64", "float32")  # what a kernel's scalar arguments may be


class Library:
    """A loaded native kernel library (module doc); :meth:`bind` prepares one kernel call."""

    def __init__(self, so: str, manifest: dict):
        self.path = so
        self.manifest = manifest
        self.key = key(manifest["fingerprint"])
        self.layout = Layout.from_json(manifest["layout"])
        if self.layout.variant == "amx" and not amx_granted():  # (its first tile instruction would be SIGILL)
            raise OSError("its int8 kernels use AMX tiles, which Linux does not let this process use")
        self.layer = manifest["threading_layer"]
        self._dll = ctypes.CDLL(str(so))
        modules = {}
        slots = manifest["slots"]
        table = (ctypes.c_void_p * max(1, len(slots))).in_dll(self._dll, "mbengine_slots")
        for i, (symbol, module, where, name) in enumerate(slots):
            if module not in modules:
                modules[module] = _load_extension(module)
            m = modules[module]
            address = getattr(m, name) if where == "attr" else m.c_helpers[name]
            if not address:
                raise ImportError(f"{module} publishes no address for {symbol}")
            table[i] = address
        self._modules = modules  # keep them loaded
        self.pool = _Pool(manifest["threading_module"])
        self._functions = {}
        for spec in manifest["kernels"]:
            fn = self._dll[spec["symbol"]]
            fn.restype = None
            self._functions[(spec["name"], _freeze(spec["kinds"]))] = fn

    def bind_all(
        self,
        calls,
        lasting: dict | None = None,
        lasting_ids: frozenset = frozenset(),
        resizable=(),
        record: dict | None = None,
    ):
        """(bound, dims) for a plan's ``(name, args)`` calls: ``bound[i]`` is (C function, (pointer to its
        argument block,)), or None where the library lacks that specialisation; ``dims`` (:class:`Dims`)
        sets the dimensions the plan passes for the ``resizable`` arrays.

        Every call's arguments are laid out in one int64 array (module doc: a call then crosses ctypes
        with one argument instead of ~40). The arrays must outlive the plan (the caller holds them);
        the block lives as long as the pointers. One pass over each call's arguments gives both the
        specialisation's key (:func:`kinds`, as tuples) and its words. A model's plan binds ~300 calls
        of ~20 arguments; its activation buffers recur in most calls, so each distinct array is looked
        at once (by identity: the ids stay valid, ``calls`` holds the arrays). An int is its own word.

        ``lasting`` ({array id: (kind, words)}, kept by the caller across plans) starts the memo and gets
        what this plan bound for the arrays whose ids are in ``lasting_ids``: ones the
        caller keeps alive as long as ``lasting`` (the weights of a runner's graph; the id of a freed
        array could be another array's later). A runner's next plan then binds its buffers only.

        ``resizable`` arrays (an arena's, see mbengine.runner.Frame) are passed with dimensions that
        :meth:`Dims.set` changes: the plan then runs on the leading part of each, which must hold that
        many elements (the pointer stays).

        ``record`` (a dict) gets what :meth:`Image.make` needs to keep the plan: the block, each call's
        key and start, and (word, array) for every data pointer."""
        seen = dict(lasting) if lasting else {}
        first = 0
        for r, a in enumerate(resizable):
            seen[id(a)] = (_kind(r, a), (a.ctypes.data, *a.shape), first)  # (its dims: from ``first`` on)
            first += a.ndim
        words, at, of, starts, functions, keys = [], [], [], [], [], []
        pointers = [] if record is not None else None
        for name, args in calls:
            starts.append(len(words))
            key = []
            for i, a in enumerate(args):
                t = type(a)
                if t is int:  # (a third of the arguments: one word, nothing to look up)
                    key.append(_INT64)
                    words.append(a)
                    continue
                if t is np.ndarray:  # arrays by identity
                    known = seen.get(id(a))
                    if known is None:
                        known = seen[id(a)] = _bound_arg(i, a)
                    if pointers is not None:
                        pointers.append((len(words), a))
                else:  # the rest, e.g. floats (-0.0 equals 0.0), NumPy scalars, array subclasses: each time
                    known = _bound_arg(i, a)
                    if pointers is not None and known[0][0] == "array":
                        pointers.append((len(words), a))
                key.append(known[0])
                if len(known) == 3:  # a resizable array: where its dimensions are in the block
                    n = len(known[1]) - 1
                    at.extend(range(len(words) + 1, len(words) + 1 + n))
                    of.extend(range(known[2], known[2] + n))
                words.extend(known[1])
            keys.append((name, tuple(key)))
            functions.append(self._functions.get(keys[-1]))
        if lasting is not None:
            lasting.update((k, v) for k, v in seen.items() if k in lasting_ids)
        block = np.array(words, np.int64)
        dims = Dims(block, np.array(at, np.intp), np.array(of, np.intp))
        if record is not None:
            record.update(block=block, keys=keys, starts=starts, pointers=pointers, dims=dims)
        return _bound(block, functions, starts), dims

    def bind_image(self, image: Image, bases: np.ndarray, room: np.ndarray):
        """(bound, dims) as :meth:`bind_all` gives for the calls ``image`` was made from, with its roots now
        at ``bases`` (addresses) holding ``room`` bytes each; None if they do not fit (fewer roots, one too
        small) or this library lacks one of its kernels. Every word is then within its root's bytes, as
        the plan was: an image of another plan cannot make a kernel reach outside those arrays."""
        if len(bases) != len(image.extents) or (room < image.extents).any():
            return None
        functions = [self._functions.get(k) for k in image.keys]
        if None in functions:
            return None
        block = image.template.copy()
        block[image.at] += bases[image.root_of]
        return _bound(block, [functions[i] for i in image.key_of], image.starts), Dims(
            block, image.dims_at, image.dims_of
        )


def owner(a: np.ndarray) -> np.ndarray:
    """The array that owns ``a``'s memory, an image's root (a view's ``.base``: NumPy keeps it one step
    away), or ``a`` itself (an array that owns its memory, or a map's whole-file array, whose ``.base``
    is the map)."""
    return a.base if isinstance(a.base, np.ndarray) else a


def _bound(block: np.ndarray, functions: list, starts) -> list:
    """Each call's (C function, (pointer to its words in ``block``,)), None where it has no function."""
    base = block.ctypes.data
    bound = []
    for fn, start in zip(functions, starts):
        if fn is None:
            bound.append(None)
            continue
        pointer = ctypes.c_void_p(base + 8 * int(start))
        pointer._block = block  # (kept alive by every call's pointer)
        bound.append((fn, (pointer,)))
    return bound


class Image:
    """A bound plan kept relative to its *roots*, the arrays that own the memory its pointers point into
    (mbengine.plans keeps them on disk): a later process with the same roots, at other addresses, gets
    the same argument block by one vectorised addition instead of binding each of its ~6 500 arguments.

    ``template``: the block with each data pointer replaced by its offset from its root's base; ``at``,
    ``root_of``: where those words are and whose; ``extents``: the bytes each root must hold from its
    base; ``keys``, ``key_of``: the kernels the calls take; ``starts``: each call's first word;
    ``dims_at``, ``dims_of``: as :class:`Dims`."""

    _ARRAYS = ("template", "at", "root_of", "extents", "key_of", "starts", "dims_at", "dims_of")

    def __init__(self, keys: list, **arrays):
        self.keys = [(name, _freeze(kinds)) for name, kinds in keys]
        for name in self._ARRAYS:
            setattr(self, name, np.asarray(arrays[name], np.int64))

    @classmethod
    def make(cls, record: dict, roots: list) -> Image | None:
        """The image of the plan :meth:`Library.bind_all` recorded in ``record``, relative to ``roots``
        ([(array, base address)]: an array's root is the array that owns its memory, ``.base`` or
        itself), or None if a pointer lies outside every root."""
        where = {id(root): r for r, (root, _) in enumerate(roots)}
        bases = np.array([b for _, b in roots], np.int64)
        extents = np.zeros(len(roots), np.int64)
        block = record["block"]
        template = block.copy()
        at, root_of = [], []
        for word, a in record["pointers"]:
            r = where.get(id(owner(a)))
            if r is None:
                return None
            offset = int(block[word]) - int(bases[r])
            if offset < 0:
                return None
            template[word] = offset
            at.append(word)
            root_of.append(r)
            extents[r] = max(extents[r], offset + a.nbytes)
        keys = list(dict.fromkeys(record["keys"]))
        index = {k: i for i, k in enumerate(keys)}
        dims = record["dims"]
        return cls(
            keys,
            template=template,
            at=at,
            root_of=root_of,
            extents=extents,
            key_of=[index[k] for k in record["keys"]],
            starts=record["starts"],
            dims_at=dims._at,
            dims_of=dims._of,
        )

    def to_bytes(self) -> bytes:
        """One line of JSON (the kernels' keys and the arrays' lengths), then the arrays as int64."""
        arrays = [getattr(self, name) for name in self._ARRAYS]
        head = json.dumps({"keys": self.keys, "lengths": [len(a) for a in arrays]}).encode()
        return head + b"\n" + b"".join(a.astype("<i8").tobytes() for a in arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> Image:
        """The image :meth:`to_bytes` wrote (ValueError, KeyError or TypeError if it is not one)."""
        head, _, rest = data.partition(b"\n")
        meta = json.loads(head)
        lengths = [int(n) for n in meta["lengths"]]
        if len(lengths) != len(cls._ARRAYS) or min(lengths) < 0 or 8 * sum(lengths) != len(rest):
            raise ValueError("an image's arrays do not match its header")
        flat = np.frombuffer(rest, "<i8")
        ends = np.cumsum(lengths)
        arrays = dict(zip(cls._ARRAYS, np.split(flat, ends[:-1])))
        image = cls(meta["keys"], **arrays)
        n = len(image.template)
        if len(image.at) != len(image.root_of) or len(image.key_of) != len(image.starts):
            raise ValueError("an image's arrays do not match each other")
        for name in ("at", "starts", "dims_at"):
            a = getattr(image, name)
            if a.size and (a.min() < 0 or a.max() >= n):
                raise ValueError(f"an image's {name} lies outside its template")
        for name, bound in (("root_of", len(image.extents)), ("key_of", len(image.keys))):
            a = getattr(image, name)
            if a.size and (a.min() < 0 or a.max() >= bound):
                raise ValueError(f"an image's {name} names no entry")
        offsets = image.template[image.at]
        if offsets.size and ((offsets < 0) | (offsets > image.extents[image.root_of])).any():
            raise ValueError("an image's pointer lies outside its root")
        return image


class Dims:
    """Where a plan's argument block holds the dimensions of its resizable arrays (:meth:`Library.bind_all`)."""

    def __init__(self, block: np.ndarray, at: np.ndarray, of: np.ndarray):
        self._block, self._at, self._of = block, at, of

    def set(self, dims: np.ndarray) -> None:
        """Pass ``dims`` (every resizable array's shape, in order, concatenated) from the next call on."""
        self._block[self._at] = dims[self._of]


def _bound_arg(i: int, a) -> tuple:
    """(kind, words in the argument block) of argument ``i`` of a call: an array's data pointer and its
    dimensions, an integer, or a float's float64 bits (a float32 is passed as its exact float64)."""
    kind = _kind(i, a)
    if kind[0] == "array":
        return kind, (a.ctypes.data, *a.shape)
    if kind[1] == "int64":
        return kind, (int(a),)
    return kind, (_I64.unpack(_F64.pack(float(a)))[0],)


_F64, _I64 = struct.Struct("=d"), struct.Struct("=q")
_INT64 = ("scalar", "int64")  # the kind of a Python int


def _freeze(k) -> tuple:
    return tuple(tuple(x) if isinstance(x, list) else x for x in k)


def _scalar_kind(a) -> str:
    if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, float, np.integer, np.floating)):
        raise TypeError(f"kernel argument {a!r} is not an array, an integer or a float")
    if isinstance(a, int):
        return "int64"
    if isinstance(a, float):
        return "float64"
    if str(a.dtype) not in _SCALARS:
        raise TypeError(f"kernel argument {a!r}: no C type for {a.dtype}")
    return str(a.dtype)  # a NumPy scalar


_DTYPE_NAMES: dict = {}


def _dtype_name(dtype) -> str:
    """``str(dtype)``, memoised by the character code of native-byte-order dtypes (``str`` costs ~8 us,
    ``char`` ~0.1; a plan asks for ~5000 arrays)."""
    if not dtype.isnative:
        return str(dtype)  # e.g. ">f4": no kernel takes it, the caller reports the missing specialisation
    name = _DTYPE_NAMES.get(dtype.char)
    if name is None:
        name = _DTYPE_NAMES[dtype.char] = str(dtype)
    return name


def kinds(args) -> list:
    """How each argument crosses the C boundary: ["array", dtype, ndim] or ["scalar", type].
    Arrays must be C-contiguous (the wrapper rebuilds them from pointer and shape)."""
    return [list(_kind(i, a)) for i, a in enumerate(args)]


def _kind(i: int, a) -> tuple:
    """:func:`kinds` of argument ``i``, as a tuple."""
    if isinstance(a, np.ndarray):
        if not a.flags.c_contiguous:
            raise ValueError(f"kernel argument {i} (shape {a.shape}) is not C-contiguous")
        return ("array", _dtype_name(a.dtype), a.ndim)
    return ("scalar", _scalar_kind(a))


def find() -> tuple[str, dict] | tuple[None, str]:
    """(library path, manifest) for this process's fingerprint, or (None, why not)."""
    fp = fingerprint()
    k = key(fp)
    looked = []
    for d in directories():
        manifest_path = os.path.join(d, f"kernels-{k}.json")
        looked.append(d)
        if not os.path.exists(manifest_path):
            continue
        try:
            with open(manifest_path) as f:
                manifest = json.load(f)
        except (OSError, ValueError) as e:
            return None, f"unreadable manifest {manifest_path}: {e}"
        if manifest.get("fingerprint") != fp:
            return None, f"{manifest_path} was built for another fingerprint"
        so = os.path.join(d, manifest["library"])
        if not os.path.exists(so):
            return None, f"{manifest_path} names a missing library {so}"
        return so, manifest
    return None, f"no native kernel library for this build (key {k}) in {', '.join(looked)}"


def load() -> tuple[Library | None, str]:
    """(the library for this process, "") or (None, why not): see the module doc."""
    so, manifest = find()
    if so is None:
        return None, manifest
    try:
        return Library(so, manifest), ""
    except (OSError, ImportError, KeyError, AttributeError, ValueError) as e:
        return None, f"cannot load {so}: {type(e).__name__}: {e}"
