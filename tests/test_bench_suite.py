"""`python -m bench suite` writes every results file README.md cites, and only those.

Nothing is benchmarked: the suite's table (bench/suite.py) is read, and
`python -m bench suite --list` runs in a subprocess, which prints it without
running any step.
"""

import fnmatch
import importlib
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
RESULTS = os.path.join(ROOT, "bench", "results")

# bench/ is not installed: it is imported from the repository, whose root leaves sys.path again at once (on it,
# the source tree's mbengine/ would shadow the installed package for processes started later, e.g. Dask workers)
sys.path.insert(0, ROOT)
try:
    suite = importlib.import_module("bench.suite")  # light: the steps are data, nothing runs on import
    BENCHMARKS = importlib.import_module("bench.__main__").BENCHMARKS
    targets = importlib.import_module("bench.targets")  # light too: json and glob, no NumPy
finally:  # (importing bench takes the root off the path already: bench/__init__.py)
    sys.path[:] = [p for p in sys.path if p != ROOT]
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}


def readme() -> str:
    with open(README, encoding="utf-8") as f:
        return f.read()


def readme_commands() -> list[list[str]]:
    """Every line of a fenced code block and every inline `code span` of the README, split into words
    (a span broken over two lines is one)."""
    text = readme()
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    inline = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.M | re.S)
    return [line.split() for block in fenced for line in block.splitlines()] + [
        span.split() for span in re.findall(r"`([^`]+)`", inline)
    ]


def cited_paths() -> list[str]:
    """File names (or globs, e.g. model*.md) the README cites as bench/results/<name>."""
    return re.findall(r"bench/results/([\w*.-]+\.\w+)", readme())


def cited_names() -> set[str]:
    """Results names the README's commands write: --name's value, else the benchmark's own name."""
    names = set()
    for args in readme_commands():
        if "--name" in args[:-1]:  # also a command's tail alone: `--seq 384 --threads 2 --name model_s384`
            names.add(args[args.index("--name") + 1])
        elif args[:3] == ["python", "-m", "bench"] and len(args) > 3 and args[3] != "suite":
            assert args[3] in BENCHMARKS, f"README runs an unknown benchmark: {' '.join(args)}"
            names.add(args[3])
    return names


def stem(filename: str) -> str:
    return filename.split(".", 1)[0]


def step_name(args: tuple[str, ...]) -> str:
    """The results name a step's `python -m bench` arguments write to."""
    return args[args.index("--name") + 1] if "--name" in args else args[0]


def test_readme_cites_results():
    """The parsing below finds what it should (a README rewrite must not make these tests vacuous)."""
    assert "model_seq.png" in cited_paths()
    assert {"model", "model_s384", "model_b8", "model_seq", "soak_long", "int8_targets"} <= cited_names()


def test_every_cited_results_file_is_in_the_suite():
    files = suite.results_files()
    for path in cited_paths():
        assert fnmatch.filter(files, path), f"README cites bench/results/{path}; the suite writes no such file"
    stems = {stem(f) for f in files}
    missing = cited_names() - stems
    assert not missing, f"README's commands write {sorted(missing)}; the suite does not run them"


def test_suite_writes_only_what_the_readme_cites():
    cited = cited_names() | {stem(p) for p in cited_paths() if "*" not in p}
    extra = {stem(f) for f in suite.results_files()} - cited
    assert not extra, f"the suite writes {sorted(extra)}, which README.md does not cite"


def test_each_file_comes_from_one_step_of_the_right_name():
    files = suite.results_files()
    assert len(files) == len(set(files)), "a results file is written by two steps"
    names = [step_name(args) for args, _ in suite.SUITE]
    assert len(names) == len(set(names)), "two steps write the same results name"
    for args, outputs in suite.SUITE:
        assert args[0] in BENCHMARKS and args[0] != "suite", args
        assert outputs, f"step {args} declares no results file"
        assert {stem(f) for f in outputs} == {step_name(args)}, (args, outputs)
        assert f"{step_name(args)}.json" in outputs and f"{step_name(args)}.md" in outputs, (args, outputs)


def test_the_committed_results_are_the_suites():
    """Every file the suite declares is in bench/results/ (the png ones included: the extensions are right)."""
    absent = [f for f in suite.results_files() if not os.path.exists(os.path.join(RESULTS, f))]
    assert not absent, f"declared by the suite but not in bench/results/: {absent}"


def test_suite_list_runs_nothing():
    out = subprocess.run(
        [sys.executable, "-m", "bench", "suite", "--list"],
        cwd=ROOT,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == suite.results_files()
    # and imports no benchmark (nor NumPy): the same call, then a look at what was imported
    code = (
        "import runpy, sys; sys.argv = ['bench', 'suite', '--list']; "
        "runpy.run_module('bench', run_name='__main__'); "
        "print(sorted(m for m in sys.modules if m.startswith(('numpy', 'torch', 'bench.bench_'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=CLEAN_ENV, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "[]", out.stdout


def test_usage_and_unknown_benchmark():
    run = [sys.executable, "-m", "bench"]
    usage = subprocess.run(run, cwd=ROOT, env=CLEAN_ENV, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and all(name in usage.stdout for name in BENCHMARKS), usage.stdout
    unknown = subprocess.run(
        [*run, "no-such-benchmark"], cwd=ROOT, env=CLEAN_ENV, capture_output=True, text=True, timeout=60
    )
    assert unknown.returncode != 0 and "unknown benchmark" in unknown.stderr


def _row(system, ms, threads=2, batch=8, seq=128, rows="ragged", floor_ms=30.0):
    return {
        "system": system,
        "median_ms": ms,
        "threads": threads,
        "batch": batch,
        "seq": seq,
        "rows": rows,
        "fp32_floor_ms": floor_ms,
        "fraction_of_fp32_floor": floor_ms / ms,
    }


def test_targets_set_each_shape_against_its_faster_peer():
    """`python -m bench targets`: the faster peer of the same precision, 0.8 (0.6 ragged), what it needs."""
    rows = [
        _row("mbengine", 40.0, rows="full"),
        _row("ort-fp32", 60.0, rows="full"),
        _row("ov-fp32", 50.0, rows="full"),
        _row("ov-int8", 10.0, rows="full"),  # another precision: not a peer of the float32 row
        _row("mbengine", 40.0),
        _row("ort-fp32", 70.0),
        _row("ov-fp32", 65.0),
        _row("mbengine-int8", 20.0),  # no int8 peer at this shape: no int8 entry
        _row("torch", 1.0),  # not a peer of either
    ]
    full, ragged = targets.targets(rows)
    assert (full["precision"], full["peer"], full["target"], full["met"]) == ("fp32", "ov-fp32", 0.8, True)
    assert abs(full["ratio"] - 40 / 50) < 1e-12 and abs(full["floor_fraction_needed"] - 30 / (0.8 * 50)) < 1e-12
    assert (ragged["rows"], ragged["peer"], ragged["target"], ragged["met"]) == ("ragged", "ov-fp32", 0.6, False)
    assert abs(ragged["floor_fraction_needed"] - 30 / (0.6 * 65)) < 1e-12
