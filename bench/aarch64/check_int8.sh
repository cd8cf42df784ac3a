#!/usr/bin/env bash
# The int8 linear kernel on aarch64 under qemu user-mode emulation: which micro-kernel variant
# kernels/qsimd.py selects, what Numba's inspect_asm() shows (sdot / smull / mul ...), and
# qmatmul_exact against NumPy's int64 product, bit for bit.
#
#   sudo bash bench/aarch64/check_int8.sh [ROOT]      default ROOT: /var/tmp/mbengine-arm64
#
# Needs the arm64 root and venv that run_emulated.sh makes (numpy, numba, llvmlite from PyPI's
# aarch64 wheels). Nothing is installed: the working tree is staged as ROOT/work/int8-src
# (mbengine/ with kernels/ as mbengine/kernels and converters/ as mbengine/converters, the
# wheel's layout, plus bench/__init__.py, __main__.py, common.py, builders.py, bench_kernels.py)
# and put first on PYTHONPATH. Each configuration runs
#
#   python -m bench kernels --int8-worker asm --int8-worker-out ...
#
# in the root with a fresh NUMBA_CACHE_DIR (inspect_asm() refuses cached code): it compiles
# qlinear and qmatmul_exact once, counts their instructions (whole module and the hottest inner
# loop) and checks qmatmul_exact on 5 small shapes. Configurations (CONFIGS, one per line, env
# assignments or "default"):
#   default                                     the emulated CPU as LLVM sees it (generic: smull)
#   NUMBA_CPU_NAME=cortex-a76                   Raspberry Pi 5 (has the dot-product extension: sdot)
#   NUMBA_CPU_NAME=cortex-a72                   Raspberry Pi 4 (no dot product: smull)
#   NUMBA_CPU_NAME=cortex-a53                   Raspberry Pi 3, Zero 2 W (no dot product: smull)
#   NUMBA_CPU_NAME=cortex-a72 MBENGINE_INT8_KERNEL=generic   the portable fallback, for comparison
#   MBENGINE_INT8_KERNEL=sdot                   sdot forced on a CPU without it: refused (clear error)
# Results: ROOT/work/int8/<name>.json, the listings <name>/{qlinear,qmatmul_exact}-<variant>.s,
# <name>.log; a summary table on stdout. Timings are of emulated code (compile times only).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ROOT=$(realpath -m "${1:-/var/tmp/mbengine-arm64}")
WORK=$ROOT/work
OUT=$WORK/int8
HOSTPY=${HOSTPY:-/work/venv/bin/python}
[ -x "$HOSTPY" ] || HOSTPY=python3
CONFIGS=${CONFIGS:-"default
NUMBA_CPU_NAME=cortex-a76
NUMBA_CPU_NAME=cortex-a72
NUMBA_CPU_NAME=cortex-a53
NUMBA_CPU_NAME=cortex-a72 MBENGINE_INT8_KERNEL=generic
MBENGINE_INT8_KERNEL=sdot"}

[ "$(id -u)" = 0 ] || { echo "needs root (chroot, mount)" >&2; exit 2; }
[ -x "$WORK/venv/bin/python" ] || { echo "no arm64 venv at $WORK/venv: run run_emulated.sh first" >&2; exit 2; }
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { echo "qemu-aarch64 binfmt not registered (run_emulated.sh does it)" >&2; exit 2; }

# ---- stage the sources
rm -rf "$WORK/int8-src" "$OUT"
mkdir -p "$WORK/int8-src/bench" "$OUT"
cp -r "$REPO/mbengine" "$WORK/int8-src/mbengine"
cp -r "$REPO/kernels" "$WORK/int8-src/mbengine/kernels"
cp -r "$REPO/converters" "$WORK/int8-src/mbengine/converters"
cp "$REPO/bench/__init__.py" "$REPO/bench/__main__.py" "$REPO/bench/common.py" "$REPO/bench/builders.py" \
    "$REPO/bench/bench_kernels.py" "$WORK/int8-src/bench/"
find "$WORK/int8-src" -name __pycache__ -prune -exec rm -rf {} +
echo "staged $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet -- kernels mbengine bench/bench_kernels.py 2>/dev/null || echo ' (+ uncommitted changes)') into $WORK/int8-src"

if ! mountpoint -q "$ROOT/proc"; then
    mount --bind /proc "$ROOT/proc"
    trap 'umount "$ROOT/proc" || true' EXIT
fi
in_root() {
    chroot "$ROOT" /usr/bin/env -i PATH=/work/venv/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
        PYTHONPATH=/work/int8-src "$@"
}
in_root python -c "import platform, sys, numpy, numba, llvmlite.binding as b; print('root:', platform.machine(), 'python', sys.version.split()[0], 'numpy', numpy.__version__, 'numba', numba.__version__, 'LLVM', b.llvm_version_info, 'host CPU', b.get_host_cpu_name(), 'dotprod' in b.get_host_cpu_features() and b.get_host_cpu_features()['dotprod'])"
in_root sh -c 'grep -m1 -iE "^(model name|cpu part|features)" /proc/cpuinfo || true'

status=0
while IFS= read -r cfg; do
    [ -n "$cfg" ] || continue
    name=$(echo "$cfg" | sed 's/NUMBA_CPU_NAME=//; s/MBENGINE_INT8_KERNEL=/force-/; s/ /_/g')
    envs=""; [ "$cfg" = default ] || envs="$cfg"
    mkdir -p "$OUT/$name"
    printf '\n==== %s  [%s]\n' "$cfg" "$(date -u +%H:%M:%S)"
    start=$(date +%s)
    # shellcheck disable=SC2086
    in_root sh -c "cd /work/int8-src && env $envs NUMBA_CACHE_DIR=/work/int8/$name/cache \
        MBENGINE_BENCH_ASM_DIR=/work/int8/$name python -m bench kernels --int8-worker asm \
        --int8-worker-out /work/int8/$name.json" > "$OUT/$name.log" 2>&1
    rc=$?
    echo "exit $rc after $(( $(date +%s) - start )) s (emulated compile + checks)"
    rm -rf "$OUT/$name/cache"
    if [ $rc -ne 0 ]; then
        grep -E "LLVM ERROR|Error|error" "$OUT/$name.log" | tail -3
        echo "$cfg" | grep -q MBENGINE_INT8_KERNEL || status=1  # a forced variant may fail; the defaults must not
    fi
done <<< "$CONFIGS"

printf '\n==== summary\n'
"$HOSTPY" - "$OUT" <<'EOF'
import glob, json, os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "..", "int8-src"))
from bench.bench_kernels import loop_summary
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    r = json.load(open(path))["asm"]
    print(f"{os.path.basename(path)[:-5]}: variant {r['variant']} (forced {r['forced']}), NUMBA_CPU_NAME "
          f"{r['numba_cpu_name']}, LLVM host CPU {r['llvm_host_cpu']}, host dotprod {r['host_features']['dotprod']}, "
          f"qmatmul_exact bit-exact {r['exact']['ok']}")
    for fname, c in r["functions"].items():
        nz = ", ".join(f"{n} {m}" for m, n in c.get("total", {}).items() if n)
        print(f"  {fname}: {nz}; {c.get('vector_insns')} NEON instructions; hottest loop: {loop_summary(c)}")
EOF
exit $status
