"""Helper of run_emulated.sh: cross-machine output check and code inspection for aarch64.

    python check_outputs.py make DIR            (host) small random checkpoints + fixed inputs in DIR
    python check_outputs.py run DIR TAG         (any machine) run the models, write DIR/out-TAG.npz and
                                                DIR/info-TAG.json (versions, vector width, timings)
    python check_outputs.py compare DIR REF TAG...   relative error of each DIR/out-TAG.npz against
                                                DIR/out-REF.npz; exit status 1 if any exceeds 1e-5
                                                (the int8 outputs: 1e-3)
    python check_outputs.py build-native DIR    (with Numba and cc) run the models once, build the native
                                                kernel library for their calls (MBENGINE_NATIVE_DIR)
    python check_outputs.py same DIR REF TAG    the outputs of TAG equal REF's bit for bit (the native
                                                library against Numba on one machine); exit status 1 if not
    python check_outputs.py asm DIR TAG         compile mbengine.kernels.linear.linear once, save its
                                                assembly as DIR/asm-TAG.s, count the FMA instructions,
                                                write DIR/asm-TAG.json

The checkpoint is a small random MobileBERT (vocab 200, hidden 64, embedding 32,
bottleneck 32, 2 layers, 2 heads, intermediate 48): ``ckpt`` holds the base model
(mbengine.cli.random_checkpoint, seed 0, std 0.2), ``ckpt-mlm`` the same tensors
plus seeded random masked-LM head weights, ``ckpt-std005`` the base model with std 0.05:
with std 0.2 the hidden state reaches |h| ~ 360 and the pooler's tanh saturates (95 % of
pooler_output is exactly +-1), so pooler_output is also compared where it is not saturated.
Inputs: int64 ids (2, 16) from ``np.random.default_rng(0)``, the second row padded after 10 tokens.

Outputs compared: MobileBertModel's last_hidden_state and pooler_output (default
fused graph; std 0.2 and std 0.05), last_hidden_state with fuse=False, and
MobileBertForMaskedLM's logits; and ``ckpt-mlm-int8``, that masked-LM model
quantized to int8 on the host (an int8 engine checkpoint, repacked for the
vector width of the machine that loads it): its last hidden state and logits,
through whichever int8 micro-kernel the running CPU gets (info-TAG.json names
it). All int8 variants form the same exact integer sums, so these agree across
machines far inside the int8 error itself (INT8_BOUND).
"""

import json
import os
import platform
import re
import sys
import time

import numpy as np

BOUND = 1e-5
# int8 outputs: every int8 variant computes the same exact integer sums, but a float32 difference upstream
# (the float kernels' vector widths differ) can move a quantized activation across a rounding boundary
INT8_BOUND = 1e-3
CONFIG = dict(
    vocab_size=200,
    hidden_size=64,
    embedding_size=32,
    intra_bottleneck_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=48,
    max_position_embeddings=64,
)


def make(d):
    from safetensors.numpy import load_file, save_file

    import mbengine
    from mbengine.cli import random_checkpoint
    from mbengine.config import MobileBertConfig
    from mbengine.converters.canonical import TIED, head_shapes

    config = MobileBertConfig(**CONFIG)
    base = random_checkpoint(os.path.join(d, "ckpt"), config, seed=0, std=0.2)
    # the masked-LM checkpoint: the same base tensors plus head tensors (tied ones are not saved, as HF does)
    tensors = load_file(os.path.join(base, "model.safetensors"))
    tensors = {k: v for k, v in tensors.items() if not k.startswith("pooler.")}
    rng = np.random.default_rng(1)
    for name, shape in sorted(head_shapes(config, "masked_lm").items()):
        if name in TIED:
            continue
        if name.endswith("LayerNorm.weight"):
            tensors[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            tensors[name] = (0.2 * rng.standard_normal(shape)).astype(np.float32)
    random_checkpoint(os.path.join(d, "ckpt-std005"), config, seed=0, std=0.05)
    mlm = os.path.join(d, "ckpt-mlm")
    os.makedirs(mlm, exist_ok=True)
    config.save_pretrained(mlm)
    save_file(tensors, os.path.join(mlm, "model.safetensors"), metadata={"format": "pt"})

    # int8: the masked-LM checkpoint quantized here, as `mbengine convert --dtype int8` does; every CPU loads it
    from mbengine import quantize as q8
    from mbengine.converters import engine

    weights = mbengine.MobileBertForMaskedLM.from_pretrained(mlm).weights
    description, batches = q8.calibration_batches(weights.config, None, None)
    engine.write(q8.quantize(weights, batches, calibration=description)[0], os.path.join(d, "ckpt-mlm-int8"))

    ids = np.random.default_rng(0).integers(0, 200, (2, 16))  # int64
    mask = np.ones_like(ids)
    mask[1, 10:] = 0
    np.savez(os.path.join(d, "inputs.npz"), ids=ids, mask=mask)
    print(
        f"wrote {base}, {mlm}, {d}/ckpt-std005, inputs ids {ids.dtype}{ids.shape}, mask row sums {mask.sum(1).tolist()}"
    )


def _versions():
    import llvmlite
    import llvmlite.binding as llvm
    import numba

    return {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "llvm": ".".join(map(str, llvm.llvm_version_info)),
        "llvm_host_cpu": llvm.get_host_cpu_name(),
        "llvm_host_features": sorted(k for k, v in llvm.get_host_cpu_features().items() if v),
        "NUMBA_CPU_NAME": os.environ.get("NUMBA_CPU_NAME"),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "threading_layer_requested": numba.config.THREADING_LAYER,
    }


def run(d, tag):
    """(With MBENGINE_KERNELS=native the models run on the native library and Numba is never imported.)"""
    t0 = time.perf_counter()
    import mbengine
    from mbengine import backend

    kernels = backend.get()
    layout = kernels.layout()
    info = {}  # (the versions at the end: reading them imports Numba)
    info.update(LANES=layout.lanes, COLS=layout.cols, kernels=kernels.name, t_import=time.perf_counter() - t0)
    inputs = np.load(os.path.join(d, "inputs.npz"))
    ids, mask = inputs["ids"], inputs["mask"]
    out, times = {}, {}

    def timed(key, fn):
        t = time.perf_counter()
        r = fn()
        times[key] = round(time.perf_counter() - t, 3)
        return r

    base = os.path.join(d, "ckpt")
    model = timed("load", lambda: mbengine.MobileBertModel.from_pretrained(base))
    r = timed("model_first_call", lambda: model(ids, attention_mask=mask))
    timed("model_second_call", lambda: model(ids, attention_mask=mask))
    out["last_hidden_state"], out["pooler_output"] = r.last_hidden_state, r.pooler_output
    unfused = mbengine.MobileBertModel.from_pretrained(base, fuse=False)
    r = timed("unfused_first_call", lambda: unfused(ids, attention_mask=mask))
    out["unfused_last_hidden_state"] = r.last_hidden_state
    small = mbengine.MobileBertModel.from_pretrained(os.path.join(d, "ckpt-std005"))
    r = timed("std005_first_call", lambda: small(ids, attention_mask=mask))
    out["std005_last_hidden_state"], out["std005_pooler_output"] = r.last_hidden_state, r.pooler_output
    mlm = mbengine.MobileBertForMaskedLM.from_pretrained(os.path.join(d, "ckpt-mlm"))
    r = timed("mlm_first_call", lambda: mlm(ids, attention_mask=mask))
    out["mlm_logits"] = r.logits
    q = mbengine.MobileBertForMaskedLM.from_pretrained(os.path.join(d, "ckpt-mlm-int8"))
    r = timed("int8_mlm_first_call", lambda: q(ids, attention_mask=mask, output_hidden_states=True))
    out["int8_last_hidden_state"], out["int8_mlm_logits"] = r.hidden_states[-1], r.logits
    info.update(int8_variant=layout.variant, target=layout.target)
    info.update(numba_modules_loaded=sum(m.split(".")[0] in ("numba", "llvmlite") for m in sys.modules))
    info.update(_versions())
    info.update(
        threading_layer=kernels.threading_layer(),
        times=times,
        t_total=round(time.perf_counter() - t0, 3),
        shapes={k: list(v.shape) for k, v in out.items()},
        dtypes={k: str(v.dtype) for k, v in out.items()},
    )
    np.savez(os.path.join(d, f"out-{tag}.npz"), **out)
    with open(os.path.join(d, f"info-{tag}.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info))


def build_native(d):
    import mbengine
    from mbengine.backend import build_native as build

    inputs = np.load(os.path.join(d, "inputs.npz"))
    ids, mask = inputs["ids"], inputs["mask"]
    models = [
        mbengine.MobileBertModel.from_pretrained(os.path.join(d, "ckpt")),
        mbengine.MobileBertModel.from_pretrained(os.path.join(d, "ckpt"), fuse=False),
        mbengine.MobileBertForMaskedLM.from_pretrained(os.path.join(d, "ckpt-mlm")),
        mbengine.MobileBertForMaskedLM.from_pretrained(os.path.join(d, "ckpt-mlm-int8")),
    ]
    for model in models:
        model(ids, attention_mask=mask, output_hidden_states=True)
    t = time.perf_counter()
    print(f"built {build(models)} in {time.perf_counter() - t:.1f} s")


def same(d, ref, tag):
    want = np.load(os.path.join(d, f"out-{ref}.npz"))
    got = np.load(os.path.join(d, f"out-{tag}.npz"))
    info = json.load(open(os.path.join(d, f"info-{tag}.json")))
    differ = [k for k in want.files if k not in got.files or not np.array_equal(got[k], want[k])]
    print(f"{tag} vs {ref}: kernels {info.get('kernels')}, Numba modules loaded {info['numba_modules_loaded']}")
    verdict = "PASS" if not differ else "FAIL"
    print(f"{verdict}: {len(want.files) - len(differ)} of {len(want.files)} outputs bit-identical {differ or ''}")
    sys.exit(0 if not differ else 1)


def compare(d, ref, tags):
    want = np.load(os.path.join(d, f"out-{ref}.npz"))
    worst = 0.0
    for tag in tags:
        got = np.load(os.path.join(d, f"out-{tag}.npz"))
        assert sorted(got.files) == sorted(want.files), (got.files, want.files)
        for key in sorted(want.files):
            a, b = got[key].astype(np.float64), want[key].astype(np.float64)
            assert a.shape == b.shape and np.all(np.isfinite(a)), (key, a.shape, b.shape)
            err = float(np.linalg.norm(a - b) / np.linalg.norm(b))
            bound = INT8_BOUND if key.startswith("int8_") else BOUND
            worst = max(worst, err / bound)
            print(
                f"{tag} vs {ref}  {key:28s} shape {str(a.shape):13s} rel err {err:.3e}  "
                f"max abs diff {np.abs(a - b).max():.3e}  {'ok' if err <= bound else 'FAIL'} (bound {bound:g})"
            )
        variants = [json.load(open(os.path.join(d, f"info-{t}.json"))).get("int8_variant") for t in (tag, ref)]
        print(f"{tag} vs {ref}: int8 variants {variants[0]} vs {variants[1]}")
    ok = worst <= 1.0
    print(f"{'PASS' if ok else 'FAIL'}: worst relative error {worst:.3g} x its bound ({BOUND:g}; int8 {INT8_BOUND:g})")
    sys.exit(0 if ok else 1)


def _dest(ins):
    """Destination register of an FMA: first operand (AArch64), last (x86 AT&T syntax)."""
    ops = [o.strip() for o in ins.split(None, 1)[1].split(",")]
    return ops[-1] if ins.startswith("v") else ops[0]


def asm(d, tag):
    import numba

    from mbengine.kernels import linear as k
    from mbengine.kernels.simd import COLS, LANES

    t = time.perf_counter()
    M, K, N = 20, 40, 3 * COLS - 3  # leftover rows and a partial panel: every tile variant is used
    rng = np.random.default_rng(0)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    out = np.zeros((M, N), np.float32)
    dummy = np.zeros((1, 1), np.float32)
    k.linear(x, 0, k.pack(w), b, 0, dummy, -1, 0, b, b, 1e-5, out, 0, 1, k.pack(w).reshape(-1).view(np.uint8))
    t_compile = time.perf_counter() - t
    err = float(
        np.linalg.norm(out - (x.astype(np.float64) @ w.T.astype(np.float64) + b))
        / np.linalg.norm(x.astype(np.float64) @ w.T + b)
    )
    code = k.linear.inspect_asm(k.linear.signatures[0])
    with open(os.path.join(d, f"asm-{tag}.s"), "w") as f:
        f.write(code)
    ins = [ln.split(None, 1) for ln in code.splitlines() if ln.startswith("\t") and not ln.strip().startswith(".")]
    mnem = [p[0] for p in ins if p]
    ops = {p[0]: [] for p in ins if p}
    for p in ins:
        if p and len(p) > 1:
            ops[p[0]].append(p[1])

    def count(pattern):
        return sum(1 for p in ins if len(p) > 1 and re.match(pattern, p[0] + " " + p[1]))

    res = {
        "tag": tag,
        "machine": platform.machine(),
        "NUMBA_CPU_NAME": os.environ.get("NUMBA_CPU_NAME"),
        "numba_cpu_name": numba.config.CPU_NAME,
        "LANES": LANES,
        "COLS": COLS,
        "t_first_call_s": round(t_compile, 2),
        "linear_rel_err_vs_float64": err,
        "asm_lines": len(code.splitlines()),
    }
    # the basic block with the most FMAs: the micro-kernel's k loop (ROWS x VECS accumulators)
    blocks, cur = [], []
    for ln in code.splitlines():
        if re.match(r"^[.\w$]+:", ln):
            blocks.append(cur)
            cur = []
        elif ln.startswith("\t") and not ln.strip().startswith("."):
            cur.append(ln.strip())
    blocks.append(cur)
    fma = re.compile(r"^(fmla\s+v\d+\.4s|vfmadd\w+)")
    hot = max(blocks, key=lambda b: sum(1 for i in b if fma.match(i)))
    res["hottest_block"] = {
        "fma": sum(1 for i in hot if fma.match(i)),
        "instructions": len(hot),
        "accumulators": len({_dest(i) for i in hot if fma.match(i)}),
        "text": hot,
    }
    if platform.machine() == "aarch64":
        res.update(
            {
                "fmla_v4s_vector": count(r"fmla\s+v\d+\.4s,\s*v\d+\.4s,\s*v\d+\.4s\s*$"),
                "fmla_v4s_by_element": count(r"fmla\s+v\d+\.4s,\s*v\d+\.4s,\s*v\d+\.s\[\d\]"),
                "fmla_v2s": count(r"fmla\s+v\d+\.2s"),
                "fmla_total": mnem.count("fmla"),
                "fmadd_s_scalar": count(r"fmadd\s+s\d+"),
                "fmadd_d_scalar": count(r"fmadd\s+d\d+"),
                "fmul_v4s": count(r"fmul\s+v\d+\.4s"),
                "fadd_v4s": count(r"fadd\s+v\d+\.4s"),
                "sve_z_regs": count(r"\w+\s+.*\bz\d+\."),
                "sdot": mnem.count("sdot"),
                "prfm": mnem.count("prfm"),
                "example_fmla": sorted(set(o for o in ops.get("fmla", [])))[:3],
            }
        )
    else:
        res.update(
            {
                "vfmadd_zmm": count(r"vfmadd\w+\s+.*%zmm"),
                "vfmadd_ymm": count(r"vfmadd\w+\s+.*%ymm"),
                "vfmadd_xmm": count(r"vfmadd\w+\s+.*%xmm"),
            }
        )
    with open(os.path.join(d, f"asm-{tag}.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if k != "hottest_block"}))
    print("hottest block:", {k: v for k, v in res["hottest_block"].items() if k != "text"})
    print("   " + "\n   ".join(res["hottest_block"]["text"]))
    if err > 1e-5:
        sys.exit(f"linear kernel result wrong: relative error {err:.3e}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cmd, d = sys.argv[1], sys.argv[2]
    if cmd == "make":
        make(d)
    elif cmd == "run":
        run(d, sys.argv[3])
    elif cmd == "compare":
        compare(d, sys.argv[3], sys.argv[4:])
    elif cmd == "asm":
        asm(d, sys.argv[3])
    elif cmd == "build-native":
        build_native(d)
    elif cmd == "same":
        same(d, sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
