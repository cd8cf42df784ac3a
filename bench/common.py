"""Helpers shared by the benchmarks: environment report, interleaved timing, result files.

Nothing here imports NumPy at module level, so :func:`clean_blas_env` can run
before NumPy (and with it OpenBLAS) is loaded.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# the working folder of the benchmarks' child processes: outside the repository, where "python -c" would put
# the sources' mbengine/ (no kernels/ or converters/ inside) first on sys.path, ahead of the installed package
CHILD_CWD = tempfile.gettempdir()

# OpenBLAS reads these once, when the library loads: a forced core type (for
# example an old one picked for a container) or an L2 size silently changes
# which GEMM kernel runs. The benchmarks drop them for their own process.
BLAS_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_REEXEC_MARK = "MBENGINE_BENCH_UNSET_BLAS_ENV"
KEEP_ENV_FLAG = "--keep-blas-env"


def clean_blas_env() -> None:
    """Re-exec this process without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE if either is set.

    ``python -m bench`` calls this first thing, before it imports the chosen
    benchmark (and with it NumPy). Only this process (and its children) is
    affected. ``--keep-blas-env`` on the command line turns this off. What was
    removed is remembered in an environment variable and reported by
    :func:`environment`.
    """
    if KEEP_ENV_FLAG in sys.argv[1:]:
        return
    found = {k: os.environ[k] for k in BLAS_ENV_VARS if k in os.environ}
    if not found:
        return
    if "numpy" in sys.modules:
        print(f"warning: {', '.join(found)} set but NumPy is already imported; not re-executing", file=sys.stderr)
        return
    env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV_VARS}
    env[_REEXEC_MARK] = ";".join(f"{k}={v}" for k, v in found.items())
    print(f"[bench] unsetting {env[_REEXEC_MARK]} for this benchmark process (re-exec)", file=sys.stderr, flush=True)
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


# --------------------------------------------------------------------------- environment
def blas_info() -> list[dict]:
    """threadpoolctl's view of the loaded BLAS/OpenMP libraries, summarised.

    The ``architecture`` field is the kernel OpenBLAS picked (``corecore``
    type, e.g. SkylakeX or Haswell); it tells which GEMM code actually ran.
    """
    try:
        import threadpoolctl
    except ImportError:
        return [{"error": "threadpoolctl not installed"}]
    out = []
    for lib in threadpoolctl.threadpool_info():
        out.append(
            {
                "user_api": lib.get("user_api"),
                "internal_api": lib.get("internal_api"),
                "prefix": lib.get("prefix"),
                "version": lib.get("version"),
                "architecture": lib.get("architecture"),
                "threading_layer": lib.get("threading_layer"),
                "num_threads": lib.get("num_threads"),
                "filepath": lib.get("filepath"),
            }
        )
    return out


def blas_summary() -> str:
    """One line: which BLAS kernels are loaded, e.g. 'openblas 0.3.31 SkylakeX (2 threads)'."""
    parts = []
    for lib in blas_info():
        if lib.get("user_api") != "blas":
            continue
        s = f"{lib.get('internal_api')} {lib.get('version')}"
        if lib.get("architecture"):
            s += f" {lib['architecture']}"
        s += f" ({lib.get('num_threads')} threads, {os.path.basename(lib.get('filepath') or '?')})"
        parts.append(s)
    return "; ".join(parts) or "no BLAS found by threadpoolctl"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") or line.startswith("Model"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "fma", "asimddp", "sve")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags") or line.startswith("Features"):
                    flags = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in flags]
    except OSError:
        pass
    return []


def _version(dist: str) -> str | None:
    """Installed version of a distribution, without importing it (importing torch would load its OpenMP)."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_state() -> dict | None:
    """Commit of the repository and whether the engine's sources differ from it."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "mbengine", "kernels", "converters"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return None
    if not head:
        return None
    return {"commit": head, "modified": [line[3:] for line in dirty if line.strip()]}


def environment() -> dict:
    """CPU, core counts, library versions, BLAS kernels and the BLAS-related environment."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    env = {
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            m: _version(m)
            for m in (
                "numpy",
                "numba",
                "llvmlite",
                "torch",
                "onnxruntime",
                "onnx",
                "transformers",
                "threadpoolctl",
                "mbengine",
            )
        },
        "env": {
            k: os.environ.get(k)
            for k in (
                *BLAS_ENV_VARS,
                "OMP_NUM_THREADS",
                "NUMBA_NUM_THREADS",
                "NUMBA_THREADING_LAYER",
                "NUMBA_CACHE_DIR",
                "MBENGINE_KERNELS",
                "MBENGINE_NATIVE_DIR",
                "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS",
            )
        },
        "unset_for_this_run": os.environ.get(_REEXEC_MARK) or None,
        "blas": blas_info(),
        "git": git_state(),
    }
    try:
        import numba

        env["numba_threads"] = numba.config.NUMBA_NUM_THREADS
        try:
            env["numba_threading_layer"] = numba.threading_layer()
        except ValueError:  # no parallel region has run yet
            env["numba_threading_layer"] = f"not initialised (config: {numba.config.THREADING_LAYER})"
    except ImportError:
        pass
    env.update(kernel_target())
    return env


def kernel_target() -> dict:
    """The CPU this process's kernels are compiled for and its int8 micro-kernel (mbengine.kernels.target)."""
    try:
        from mbengine.kernels import qsimd
        from mbengine.kernels.target import TARGET
    except ImportError as e:
        return {"compile_target": f"unavailable ({e})"}
    return {"compile_target": TARGET.describe(), "int8_kernel": qsimd.VARIANT, "native_library": native_library()}


def native_library() -> str:
    """Which native kernel library ``MBENGINE_KERNELS=auto`` (the default) would run, or why none: a
    benchmark that does not choose its kernels runs the library when ``mbengine warmup`` built one."""
    from mbengine.kernels import native

    path, manifest_or_why = native.find()
    return str(path) if path is not None else f"none: {manifest_or_why}"


def print_environment(env: dict) -> None:
    v = env["versions"]
    print(
        f"CPU: {env['cpu']} ({env['machine']}, {env['usable_cpus']}/{env['logical_cpus']} usable CPUs, "
        f"flags {' '.join(env['cpu_flags']) or '-'})"
    )
    print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val))
    print(f"BLAS: {blas_summary()}")
    if env.get("git"):
        g = env["git"]
        print(
            f"mbengine at {g['commit']}"
            + (f" + uncommitted changes in {', '.join(g['modified'])}" if g["modified"] else "")
        )
    if env.get("unset_for_this_run"):
        print(f"unset for this run: {env['unset_for_this_run']}")
    if env.get("numba_threading_layer"):
        print(f"numba threading layer: {env['numba_threading_layer']}")
    if env.get("compile_target"):
        print(f"kernels compiled for: {env['compile_target']}; int8 kernel: {env.get('int8_kernel')}")
    if env.get("native_library"):
        print(
            f"native kernel library (MBENGINE_KERNELS={env['env'].get('MBENGINE_KERNELS') or 'auto'}): "
            f"{env['native_library']}"
        )


# --------------------------------------------------------------------------- machine load
# On a small shared machine another process using a core ruins parallel
# timings (a kernel's threads wait at a barrier for a descheduled sibling), so
# every benchmark measures how much CPU *other* processes used while it ran.
def _cpu_jiffies() -> tuple[int, int, int] | None:
    """(busy, total, steal) jiffies of all CPUs, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    total = sum(vals[:8])  # guest time is already counted in user
    steal = vals[7] if len(vals) > 7 else 0  # time the hypervisor gave our vCPUs to someone else
    return total - idle - steal, total, steal


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadMonitor:
    """CPU used by other processes between start() and stop(), as a fraction of all CPUs.

    mon = LoadMonitor().start(); ...; mon.stop() -> {"other_cpu": 0.02, "own_cpu": 1.9, ...}
    """

    def start(self) -> LoadMonitor:
        self._j0 = _cpu_jiffies()
        self._own0 = _own_cpu_seconds()
        self._t0 = time.perf_counter()
        return self

    def stop(self) -> dict:
        j1 = _cpu_jiffies()
        wall = time.perf_counter() - self._t0
        own = _own_cpu_seconds() - self._own0
        if self._j0 is None or j1 is None or j1[1] == self._j0[1]:
            return {"wall_s": wall, "own_cpu_s": own, "other_cpu": None}
        hz = os.sysconf("SC_CLK_TCK")
        ncpu = os.cpu_count() or 1
        busy = (j1[0] - self._j0[0]) / hz
        total = (j1[1] - self._j0[1]) / hz
        other = max(0.0, busy - own)
        steal = (j1[2] - self._j0[2]) / hz
        return {
            "wall_s": wall,
            "own_cpu_s": own,
            "busy_cpu_s": busy,
            "steal": steal / total if total else None,  # fraction of all CPUs' time taken by the hypervisor
            "other_cpu": other / total if total else None,  # fraction of all CPUs' time
            "other_cpus_equiv": other / (total / ncpu) if total else None,  # in CPUs, e.g. 0.9
            "loadavg": os.getloadavg(),
        }


def wait_until_quiet(max_wait: float, threshold: float = 0.1, window: float = 2.0) -> float | None:
    """Wait (up to ``max_wait`` s) until other processes use < ``threshold`` of the CPUs over ``window`` s.

    Returns the last measured fraction (None if /proc/stat is unreadable).
    """
    deadline = time.monotonic() + max_wait
    frac = None
    while True:
        mon = LoadMonitor().start()
        time.sleep(window)
        frac = mon.stop()["other_cpu"]
        if frac is None or frac < threshold:
            return frac
        if time.monotonic() >= deadline:
            print(
                f"[bench] machine still busy after {max_wait:.0f}s: other processes use "
                f"{100 * frac:.0f}% of the CPUs; timings will be disturbed",
                flush=True,
            )
            return frac
        print(f"[bench] waiting for a quiet machine (other processes use {100 * frac:.0f}% of the CPUs)", flush=True)


def load_warning(load: dict, limit: float = 0.05) -> str | None:
    frac = load.get("other_cpu")
    if frac is not None and frac > limit:
        return (
            f"WARNING: other processes used {100 * frac:.0f}% of the CPUs during the run "
            f"(~{load.get('other_cpus_equiv', 0):.2f} CPUs); parallel timings are unreliable"
        )
    return None


# --------------------------------------------------------------------------- timing
def pause(seconds: float, spin: bool = True) -> None:
    """Wait ``seconds``: by busy-waiting on this thread (default) or by sleeping.

    Busy-waiting is the default between benchmark samples. A sleeping process
    on a lightly loaded Linux VM lets the scheduler's load tracking decay, and
    then a woken OpenMP worker can be placed on the CPU where the master is
    spinning at the barrier: measured here, a 25 us parallel kernel took
    5-10 ms per call (a scheduler tick) after a few 150 ms sleeps between 5 ms
    samples, and never with the same pauses spent busy-waiting.
    """
    if seconds <= 0:
        return
    if not spin:
        time.sleep(seconds)
        return
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def time_interleaved(
    fns: dict,
    repeats: int,
    warmup: int = 1,
    number: int | dict = 1,
    gap: float | dict = 0.0,
    spin_gap: bool = True,
    timer=time.perf_counter,
) -> dict[str, list[float]]:
    """Time several systems round-robin; return {name: [seconds per call, one per round]}.

    Each round runs every system once (``number`` calls back to back, the
    sample is their mean; ``number`` may be a dict per system). The order
    rotates from round to round so no system always follows the same
    neighbour, and slow drifts of the machine (frequency, other load) hit all
    systems alike. ``warmup`` untimed rounds come first.

    ``gap``: seconds of pause after each sample (a dict gives it per system).
    Thread pools keep spinning after a call (measured here: OpenBLAS ~100 ms,
    ONNX Runtime ~30 ms, libgomp a few ms), and on a machine with few cores a
    spinning pool steals a core from whichever system runs next; the gap lets
    it go idle first. The pause busy-waits on the calling thread unless
    ``spin_gap`` is false (see :func:`pause` for why).
    """
    names = list(fns)
    counts = {n: (number[n] if isinstance(number, dict) else number) for n in names}
    gaps = {n: (gap.get(n, 0.0) if isinstance(gap, dict) else gap) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn = fns[name]
            k = counts[name]
            t0 = timer()
            for _ in range(k):
                fn()
            dt = (timer() - t0) / k
            if r >= warmup:
                times[name].append(dt)
            if gaps[name]:
                pause(gaps[name], spin_gap)
    return times


def time_when_quiet(
    fns: dict, repeats: int, *, retries: int = 2, busy_limit: float = 0.05, wait: float = 120.0, **kwargs
) -> tuple[dict[str, list[float]], dict, int]:
    """:func:`time_interleaved`, measured again (up to ``retries`` times) if other processes were busy meanwhile.

    If other processes used more than ``busy_limit`` of the CPUs while the
    systems were being timed, wait (up to ``wait`` s) for a quiet machine and
    time again; the attempt with the least foreign load is kept. Returns
    (times, load of the kept attempt, attempts made).
    """
    best = None
    for attempt in range(1, retries + 2):
        mon = LoadMonitor().start()
        times = time_interleaved(fns, repeats, **kwargs)
        load = mon.stop()
        frac = load.get("other_cpu")
        if best is None or (frac is not None and frac < (best[1].get("other_cpu") or 0.0)):
            best = (times, load)
        if frac is None or frac <= busy_limit or attempt > retries:
            break
        print(
            f"  [bench] other processes used {100 * frac:.0f}% of the CPUs while timing; "
            f"measuring again (attempt {attempt + 1})",
            flush=True,
        )
        if wait > 0:
            wait_until_quiet(wait)
    return best[0], best[1], attempt


def calibrate(fn, target: float = 0.005, max_number: int = 10000) -> int:
    """How many back-to-back calls of ``fn`` take about ``target`` seconds (at least 1)."""
    fn()
    t0 = time.perf_counter()
    fn()
    dt = max(time.perf_counter() - t0, 1e-7)
    return int(min(max_number, max(1, round(target / dt))))


def stats(samples: list[float]) -> dict:
    """median / min / mean / stdev of a list of seconds (in seconds)."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "mean": statistics.fmean(samples),
        "stdev": statistics.stdev(samples) if len(samples) > 1 else 0.0,
        "n": len(samples),
    }


def median(samples):
    return statistics.median(samples)


# --------------------------------------------------------------------------- output
def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(
    name: str, data: dict, table: str | None = None, title: str | None = None, notes: list[str] | None = None
) -> tuple[str, str]:
    """Write bench/results/<name>.json (all of ``data``) and <name>.md (environment + table).

    ``table`` is a markdown table (see :func:`markdown_table`); without it the
    markdown file holds ``data['rows']`` as a table if present.
    """
    os.makedirs(RESULTS_DIR, exist_ok=True)
    jpath = os.path.join(RESULTS_DIR, f"{name}.json")
    mpath = os.path.join(RESULTS_DIR, f"{name}.md")
    with open(jpath, "w") as f:
        json.dump(data, f, indent=1, default=_json_default)
        f.write("\n")
    if table is None and data.get("rows"):
        rows = data["rows"]
        headers = list(rows[0])
        table = markdown_table(headers, [[r.get(h) for h in headers] for r in rows])
    md = [f"# {title or name}", ""]
    env = data.get("environment")
    if env:
        md.append(f"- CPU: {env['cpu']} ({env['usable_cpus']} usable CPUs; {' '.join(env['cpu_flags'])})")
        md.append("- " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v))
        md.append(f"- BLAS: {_blas_line(env)}")
        if env.get("unset_for_this_run"):
            md.append(f"- unset for this run: `{env['unset_for_this_run']}`")
        if env.get("numba_threading_layer"):
            md.append(f"- numba threading layer: {env['numba_threading_layer']}")
        if env.get("compile_target"):
            md.append(f"- kernels compiled for: {env['compile_target']}; int8 kernel: {env.get('int8_kernel')}")
        if env.get("git"):
            g = env["git"]
            md.append(
                f"- mbengine at commit {g['commit']}"
                + (f" + uncommitted changes in {', '.join(g['modified'])}" if g["modified"] else "")
            )
    if data.get("command"):
        md.append(f"- command: `{data['command']}`")
    if data.get("date"):
        md.append(f"- date: {data['date']}")
    for n in notes or []:
        md.append(f"- {n}")
    md += ["", table or "", ""]
    with open(mpath, "w") as f:
        f.write("\n".join(md))
    return jpath, mpath


def publish(name: str, data: dict, table: str, title: str, notes: list[str], warning: str | None = None) -> str:
    """The end of a side-by-side benchmark: the skipped systems (``data["skipped"]``) and the load
    ``warning`` join the notes, the results files are written (:func:`write_results`), and the table,
    the skips and the warning are printed. Returns the json path."""
    skipped = [f"skipped {system}: {why}" for system, why in data.get("skipped", {}).items()]
    extra = skipped + ([warning] if warning else [])
    jpath, mpath = write_results(name, data, table=table, title=title, notes=notes + extra)
    print()
    print(table)
    for line in extra:
        print(line)
    print(f"wrote {jpath}, {mpath}")
    return jpath


def _blas_line(env: dict) -> str:
    parts = []
    for lib in env.get("blas", []):
        if lib.get("user_api") == "blas":
            parts.append(f"{lib.get('internal_api')} {lib.get('version')} {lib.get('architecture') or ''}".strip())
    return "; ".join(parts) or "none found"


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


def reason(e: BaseException) -> str:
    """An exception in one line (type and first line of its message), at most 300 characters."""
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:300]


def command_line() -> str:
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return " ".join(argv[1:]) if argv else ""


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


def rel_err(x, ref) -> float:
    """||x - ref|| / ||ref|| in float64 (Frobenius norms)."""
    import numpy as np

    x = np.asarray(x, np.float64)
    ref = np.asarray(ref, np.float64)
    denom = np.linalg.norm(ref)
    return float(np.linalg.norm(x - ref) / denom) if denom else float(np.linalg.norm(x - ref))
