"""Issue 19's speed targets against the model runs on file, and what each would take.

    python -m bench targets [--name targets]

Nothing is timed: this reads the ``bench/results/model*.json`` files that
``python -m bench model`` wrote (whichever CPU each ran on; the README's
commands name them) and, for every shape and precision, sets mbengine's median
against the faster of ONNX Runtime and OpenVINO at the same precision. The
target is at most 0.8 of that peer's time, 0.6 on ragged batches.

The last column turns the target into work. It is the fraction of the fp32 floor
that mbengine would have to run at to meet it. The floor is the real tokens'
FLOPs at the machine's measured float32 GEMM peak, as ``bench model`` reports
it. Above 100%, a float32 target asks for more than NumPy's BLAS reaches on a
large square matmul on that machine: no kernel of ours gets there. int8 rows
are given against the same float32 floor, so theirs can exceed 100%.
Results: bench/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import glob
import json
import os

from bench import common

PEERS = {"fp32": ("mbengine", ("ort-fp32", "ov-fp32")), "int8": ("mbengine-int8", ("ort-int8", "ov-int8"))}
TARGET = {"ragged": 0.6}  # mbengine's time over the faster peer's, at most; 0.8 for every other kind of batch
DEFAULT_TARGET = 0.8


def targets(rows: list[dict]) -> list[dict]:
    """One entry per (threads, batch, seq, rows kind, precision) of one ``bench model`` run's rows."""
    shapes: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        shapes.setdefault((r["threads"], r["batch"], r["seq"], r["rows"]), {})[r["system"]] = r
    out = []
    for (threads, batch, seq, kind), systems in shapes.items():
        for precision, (ours, peers) in PEERS.items():
            found = [systems[p] for p in peers if p in systems]
            if ours not in systems or not found:
                continue
            me, best = systems[ours], min(found, key=lambda r: r["median_ms"])
            target = TARGET.get(kind, DEFAULT_TARGET)
            allowed_ms = target * best["median_ms"]
            out.append(
                {
                    "threads": threads,
                    "batch": batch,
                    "seq": seq,
                    "rows": kind,
                    "precision": precision,
                    "mbengine_ms": me["median_ms"],
                    "peer": best["system"],
                    "peer_ms": best["median_ms"],
                    "ratio": me["median_ms"] / best["median_ms"],
                    "target": target,
                    "met": me["median_ms"] <= allowed_ms,
                    "fraction_of_fp32_floor": me["fraction_of_fp32_floor"],
                    "floor_fraction_needed": me["fp32_floor_ms"] / allowed_ms,
                }
            )
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="targets")
    parser.add_argument(common.KEEP_ENV_FLAG, action="store_true", help="(accepted; nothing here uses BLAS)")
    args = parser.parse_args(argv)
    entries = []
    for path in sorted(glob.glob(os.path.join(common.RESULTS_DIR, "model*.json"))):
        if os.path.basename(path).startswith("model_seq"):
            continue  # (the latency-against-length plot: its s128 and s384 rows repeat runs made for the table)
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
        env = run.get("environment", {})
        for t in targets(run["rows"]):
            t["file"], t["cpu"] = os.path.basename(path), f"{env.get('compile_target')}, {env.get('int8_kernel')}"
            entries.append(t)
    headers = [
        "file",
        "kernels compiled for, int8 kernel",
        "shape",
        "precision",
        "mbengine ms",
        "faster peer ms",
        "ratio",
        "target",
        "met",
        "mbengine % of fp32 floor",
        "% of fp32 floor needed",
    ]
    table = common.markdown_table(
        headers,
        [
            [
                t["file"],
                t["cpu"],
                f"b{t['batch']} s{t['seq']} {t['rows']}, {t['threads']} thr",
                t["precision"],
                f"{t['mbengine_ms']:.1f}",
                f"{t['peer_ms']:.1f} ({t['peer']})",
                f"{t['ratio']:.2f}",
                t["target"],
                "yes" if t["met"] else "no",
                f"{100 * t['fraction_of_fp32_floor']:.0f}%",
                f"{100 * t['floor_fraction_needed']:.0f}%",
            ]
            for t in entries
        ],
    )
    notes = [
        "read from: bench/results/model*.json but model_seq (nothing timed; each file's own environment names its CPU)",
        "target: mbengine's median at most 0.8x the faster of ONNX Runtime and OpenVINO at the same precision, "
        "0.6x on ragged batches",
        "% of fp32 floor: the real tokens' FLOPs at that run's measured float32 GEMM peak, over the median; "
        "needed: what meeting the target takes (above 100% in float32: beyond NumPy's BLAS on that machine)",
    ]
    data = {"command": f"-m bench targets --name {args.name}", "rows": entries}
    common.write_results(
        args.name, data, table, title="Issue 19's speed targets against the model runs on file", notes=notes
    )
    print(table)


if __name__ == "__main__":
    main()
