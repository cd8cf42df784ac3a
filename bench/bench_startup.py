"""Start-up cost and footprint: import time, cold compile, warm first call, peak RSS.

    python -m bench startup [--repeats 3]

Every measurement runs in a fresh Python process (the parent only writes a
full-size random MobileBERT, as a Hugging Face checkpoint and as an engine
checkpoint). Cold = an empty Numba cache directory (every kernel compiles);
warm = the same directory again. Peak RSS is the child's own high-water mark
(VmHWM in /proc/self/status), as in bench_int8. The child's ``ru_maxrss`` is
kept in the JSON only: Linux folds the parent's RSS at fork into it, and this
parent holds a loaded model, so it overstates the child's peak.
Results: bench/results/startup.json and startup.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from bench import common

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import mbengine
t_import = time.perf_counter() - t0
result = {"import_s": t_import}
if sys.argv[1] != "import":
    import numpy as np
    t1 = time.perf_counter()
    model = mbengine.MobileBertModel.from_pretrained(sys.argv[1], threads=int(sys.argv[2]))
    t2 = time.perf_counter()
    ids = np.random.default_rng(0).integers(1000, 30000, (1, 128))
    model(ids)
    t3 = time.perf_counter()
    model(ids)
    t4 = time.perf_counter()
    result.update(load_s=t2 - t1, first_call_s=t3 - t2, second_call_s=t4 - t3, load_and_first_s=t3 - t1)
with open("/proc/self/status") as f:
    result["peak_rss_mib"] = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
result["ru_maxrss_mib_overstated"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""


def child(args: list[str], cache: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    out = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    from mbengine.cli import random_checkpoint
    from mbengine.converters import engine
    from mbengine.modeling import MobileBertModel

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = random_checkpoint(os.path.join(tmp, "hf"))
        engine.write(MobileBertModel.from_pretrained(hf_dir).weights, os.path.join(tmp, "engine"))
        imports = [child(["import"], os.path.join(tmp, "cache-import")) for _ in range(args.repeats)]
        rows.append(
            {
                "measurement": "import mbengine",
                "seconds": round(min(r["import_s"] for r in imports), 3),
                "peak RSS MiB": round(imports[-1]["peak_rss_mib"]),
            }
        )
        for label, path in (("HF checkpoint", hf_dir), ("engine checkpoint", os.path.join(tmp, "engine"))):
            for threads in (1, 2):
                cache = os.path.join(tmp, f"cache-{label[:2]}-{threads}")
                cold = child([path, str(threads)], cache)
                warm = min(
                    (child([path, str(threads)], cache) for _ in range(args.repeats)),
                    key=lambda r: r["load_and_first_s"],
                )
                rows.append(
                    {
                        "measurement": f"{label}, {threads} thread(s): cold cache, load + first call",
                        "seconds": round(cold["load_and_first_s"], 2),
                        "peak RSS MiB": round(cold["peak_rss_mib"]),
                        "ru_maxrss MiB (overstated)": round(cold["ru_maxrss_mib_overstated"]),
                    }
                )
                rows.append(
                    {
                        "measurement": f"{label}, {threads} thread(s): warm cache, load + first call",
                        "seconds": round(warm["load_and_first_s"], 3),
                        "peak RSS MiB": round(warm["peak_rss_mib"]),
                        "ru_maxrss MiB (overstated)": round(warm["ru_maxrss_mib_overstated"]),
                        "load s": round(warm["load_s"], 3),
                        "first call s": round(warm["first_call_s"], 3),
                        "second call s": round(warm["second_call_s"], 3),
                    }
                )
                print(rows[-2], rows[-1], sep="\n")
    return {"environment": common.environment(), "command": common.command_line(), "date": common.now(), "rows": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="startup")
    parser.add_argument(common.KEEP_ENV_FLAG, action="store_true", help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE")
    args = parser.parse_args(argv)
    data = run(args)
    headers = ["measurement", "seconds", "peak RSS MiB", "load s", "first call s", "second call s"]
    table = common.markdown_table(headers, [[r.get(h) for h in headers] for r in data["rows"]])
    common.write_results(
        args.name,
        data,
        table=table,
        title="Start-up time and peak RSS (full-size model, b1 s128)",
        notes=[
            "each number from a fresh process; warm = best of the repeats",
            "peak RSS = the child's VmHWM (its ru_maxrss, in the JSON, is overstated: "
            "Linux folds the parent's RSS at fork into it)",
        ],
    )
    print(table)
