#!/usr/bin/env bash
# Verify mbengine on aarch64 (arm64) under qemu user-mode emulation, on an x86-64 Debian host.
#
#   sudo bash bench/aarch64/run_emulated.sh [ROOT]      default ROOT: /var/tmp/mbengine-arm64
#
# Environment knobs:
#   HOSTPY      host Python that has mbengine installed (default /work/venv/bin/python, else python3)
#   CPUS        extra NUMBA_CPU_NAME targets to compile for (default "cortex-a72 cortex-a76":
#               Raspberry Pi 4 and Raspberry Pi 5)
#   TESTS       pytest files run inside the arm64 root ("" skips them; default
#               "tests/test_graph.py tests/test_bad_input.py tests/test_kernels.py tests/test_threads.py":
#               the files that need neither torch nor transformers)
#   MIRROR      Debian mirror for debootstrap (default: the first URIs of /etc/apt/sources.list.d/debian.sources)
#
# What it does (every step is idempotent: an existing ROOT, venv and packages are reused):
#  1. apt installs qemu-user-static and debootstrap if missing; mounts binfmt_misc and
#     registers qemu-aarch64 (/usr/lib/binfmt.d/qemu-aarch64.conf) if not yet registered.
#  2. debootstrap --arch=arm64 --variant=minbase bookworm (python3, python3-venv, python3-pip,
#     ca-certificates) into ROOT.partial, renamed to ROOT when complete.
#  3. copies the host's resolv.conf, pip.conf and CA bundle into ROOT, bind-mounts /proc
#     (unmounted again on exit if this script mounted it).
#  4. builds the project's wheel on the host (pip wheel --no-deps), installs it in an arm64 venv
#     (ROOT/work/venv) with its dependencies, i.e. PyPI's aarch64 wheels of numpy, numba,
#     llvmlite, safetensors and tokenizers; the project's wheel is force-reinstalled every run.
#  5. on the host: small random checkpoints (base std 0.2, base std 0.05, base + masked-LM head)
#     and fixed int64 inputs (bench/aarch64/check_outputs.py make), and the host's outputs
#     (... run, tag x86_64; host Numba cache in ROOT/work/host-cache).
#  6. in the root (with Debian's arm64 libgomp1 added, so Numba's omp threading layer is
#     available): the same run (tag aarch64), cold Numba cache, then warm cache, then warm with
#     NUMBA_THREADING_LAYER=workqueue (what a root without libgomp gets); then compare against
#     the host: relative error <= 1e-5 for MobileBertModel's last_hidden_state / pooler_output
#     (fused and unfused graph, both checkpoints) and MobileBertForMaskedLM's logits.
#  6b. in the root (gcc, libc6-dev and binutils added): the native kernel library built from the warm
#     Numba cache (check_outputs.py build-native), the same run with MBENGINE_KERNELS=native (Numba never
#     imported), its outputs bit-identical to the Numba run's (check_outputs.py same).
#  7. in the root, per CPU (the emulated default, then each of CPUS via NUMBA_CPU_NAME, each with
#     a fresh cache so the code is really compiled): the kernels' vector width (LANES, COLS) and the
#     instructions of mbengine.kernels.linear.linear's assembly (fmla v.4s counts ...);
#     the whole model is also run and compared once per CPU of CPUS.
#  8. optionally pytest TESTS in the root (pip installs pytest and hypothesis there).
# Artifacts: ROOT/work (outputs out-*.npz, info-*.json, asm-*.s/json, run.log).
# Timings are of emulated code (qemu 7.2 TCG): indicative only, not real-hardware numbers.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ROOT=$(realpath -m "${1:-/var/tmp/mbengine-arm64}")
HOSTPY=${HOSTPY:-/work/venv/bin/python}
[ -x "$HOSTPY" ] || HOSTPY=python3
CPUS=${CPUS-cortex-a72 cortex-a76}
TESTS=${TESTS-tests/test_graph.py tests/test_bad_input.py tests/test_kernels.py tests/test_threads.py}
WORK=$ROOT/work                   # seen as /work inside the root
LOG=$WORK/run.log

[ "$(id -u)" = 0 ] || { echo "needs root (debootstrap, mount, chroot)" >&2; exit 2; }
[ "$(uname -m)" = x86_64 ] || echo "note: host is $(uname -m), not x86_64"
stamp() { printf '\n==== %s  [%s]\n' "$*" "$(date -u +%H:%M:%S)"; }
TIMEFORMAT='  (wall %R s)'

# ---- 1. qemu + binfmt
export DEBIAN_FRONTEND=noninteractive
if ! command -v debootstrap >/dev/null || [ ! -x /usr/bin/qemu-aarch64-static ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends qemu-user-static debootstrap
fi
mountpoint -q /proc/sys/fs/binfmt_misc || mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    # the F flag (in Debian's .conf) opens the interpreter now, so it also works inside the chroot
    cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
fi
grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64

# ---- 2. arm64 userland
if [ ! -x "$ROOT/usr/bin/python3" ]; then
    if [ -z "${MIRROR:-}" ]; then
        MIRROR=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
        MIRROR=${MIRROR:-http://deb.debian.org/debian}
    fi
    rm -rf "$ROOT.partial"
    echo "debootstrap arm64 bookworm from $MIRROR into $ROOT"
    time debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$ROOT.partial" "$MIRROR" \
        > "$ROOT.debootstrap.log" 2>&1 || { tail -20 "$ROOT.debootstrap.log"; exit 1; }
    mv "$ROOT.partial" "$ROOT"
fi
mkdir -p "$WORK"
exec > >(tee -a "$LOG") 2>&1
stamp "run_emulated.sh, ROOT=$ROOT, repo $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"

# ---- 3. what the root needs from the host
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$ROOT/etc/pip.conf"
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
if ! mountpoint -q "$ROOT/proc"; then
    mount --bind /proc "$ROOT/proc"
    trap 'umount "$ROOT/proc" || true' EXIT
fi
# a clean environment in the root: no host PIP_FIND_LINKS etc.
in_root() {
    chroot "$ROOT" /usr/bin/env -i PATH=/work/venv/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
        NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-/work/numba-cache} ${EXTRA_ENV:-} "$@"
}
stamp "arm64 root"
in_root /usr/bin/python3 -c "import platform, sys; print('python3 in root:', platform.machine(), sys.version.split()[0])"

# ---- 4. the wheel, and the arm64 venv
stamp "build wheel on host"
rm -rf "$WORK/dist"
"$HOSTPY" -m pip wheel -q --no-deps -w "$WORK/dist" "$REPO"
WHEEL=$(cd "$WORK/dist" && ls mbengine-*.whl)
echo "$WHEEL"
stamp "pip install in the arm64 venv"
[ -x "$WORK/venv/bin/python" ] || in_root /usr/bin/python3 -m venv /work/venv
time in_root pip install -q "/work/dist/$WHEEL"
in_root pip install -q --force-reinstall --no-deps "/work/dist/$WHEEL"
in_root pip list 2>/dev/null | grep -Ei '^(numpy|numba|llvmlite|safetensors|tokenizers|mbengine|pip) '
cp "$HERE/check_outputs.py" "$WORK/check_outputs.py"
# minbase has no libgomp: Numba would fall back to its workqueue threading layer. Install the
# arm64 libgomp1 from the root's own apt, so the default run uses the omp layer (as wherever GCC's
# runtime is installed); step 6 also runs with NUMBA_THREADING_LAYER=workqueue.
if [ ! -e "$ROOT/usr/lib/aarch64-linux-gnu/libgomp.so.1" ]; then
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DEBIAN_FRONTEND=noninteractive \
        sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends libgomp1 >/dev/null"
fi

# ---- 5. inputs + host reference
stamp "host: checkpoints, inputs, reference outputs"
rm -rf "$WORK"/ckpt* "$WORK"/out-*.npz "$WORK"/info-*.json "$WORK"/asm-*
"$HOSTPY" "$WORK/check_outputs.py" make "$WORK"
NUMBA_CACHE_DIR=$WORK/host-cache "$HOSTPY" "$WORK/check_outputs.py" run "$WORK" x86_64 >/dev/null
"$HOSTPY" -c "import json,sys; i=json.load(open(sys.argv[1])); print('host:', {k: i[k] for k in ('python','numpy','numba','llvmlite','llvm','llvm_host_cpu','LANES','COLS','threading_layer')}, i['times'])" "$WORK/info-x86_64.json"

# ---- 6. the model on aarch64
stamp "aarch64: import timings"
time in_root python -c "import numpy"
time in_root python -c "import numba"
time in_root python -c "import mbengine; from mbengine.kernels.simd import LANES, COLS; print('LANES', LANES, 'COLS', COLS)"
stamp "aarch64: model run, cold Numba cache"
rm -rf "$WORK/numba-cache"
time in_root python /work/check_outputs.py run /work aarch64
stamp "aarch64: model run again, warm Numba cache"
time in_root python /work/check_outputs.py run /work aarch64-warm
stamp "aarch64: model run, warm cache, NUMBA_THREADING_LAYER=workqueue"
time EXTRA_ENV=NUMBA_THREADING_LAYER=workqueue in_root python /work/check_outputs.py run /work aarch64-workqueue
stamp "compare aarch64 with x86-64"
status=0
"$HOSTPY" "$WORK/check_outputs.py" compare "$WORK" x86_64 aarch64 aarch64-warm aarch64-workqueue || status=1

# ---- 6b. the native kernel library: built in the root (its C compiler links Numba's object code), then the
# same run without Numba in the process, bit-identical to the Numba run on the same emulated CPU
if [ ! -x "$ROOT/usr/bin/cc" ]; then
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DEBIAN_FRONTEND=noninteractive \
        sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev binutils >/dev/null"
fi
stamp "aarch64: native kernel library built (warm Numba cache)"
rm -rf "$WORK/native"
time EXTRA_ENV=MBENGINE_NATIVE_DIR=/work/native in_root python /work/check_outputs.py build-native /work || status=1
stamp "aarch64: model run on the native library (no Numba in the process)"
time EXTRA_ENV="MBENGINE_KERNELS=native MBENGINE_NATIVE_DIR=/work/native" \
    in_root python /work/check_outputs.py run /work aarch64-native >/dev/null || status=1
"$HOSTPY" "$WORK/check_outputs.py" same "$WORK" aarch64-warm aarch64-native || status=1

# ---- 7. vector width and instructions, per target CPU
for cpu in default $CPUS; do
    stamp "aarch64 asm of linear(), NUMBA_CPU_NAME=$cpu"
    rm -rf "$WORK/cache-asm-$cpu"
    env_cpu=""; [ "$cpu" = default ] || env_cpu="NUMBA_CPU_NAME=$cpu"
    EXTRA_ENV="$env_cpu" NUMBA_CACHE_DIR=/work/cache-asm-$cpu in_root python /work/check_outputs.py asm /work "$cpu" || status=1
    if [ "$cpu" != default ]; then
        stamp "aarch64: model run with NUMBA_CPU_NAME=$cpu (fresh cache)"
        rm -rf "$WORK/cache-$cpu"
        time EXTRA_ENV="$env_cpu" NUMBA_CACHE_DIR=/work/cache-$cpu in_root python /work/check_outputs.py run /work "aarch64-$cpu" >/dev/null
        "$HOSTPY" "$WORK/check_outputs.py" compare "$WORK" x86_64 "aarch64-$cpu" || status=1
    fi
done

# ---- 8. a smoke subset of the test suite
if [ -n "$TESTS" ]; then
    stamp "aarch64: pytest $TESTS"
    in_root pip install -q pytest hypothesis
    rm -rf "$WORK/tests" && cp -r "$REPO/tests" "$WORK/tests"
    rm -rf "$WORK/tests/fixtures" "$WORK/tests/__pycache__"
    # from /work/tests' parent without the repo's pyproject: mbengine comes from the installed wheel
    time EXTRA_ENV="HYPOTHESIS_STORAGE_DIRECTORY=/tmp/hypothesis" in_root sh -c \
        "cd /work && python -m pytest -q -p no:cacheprovider --import-mode=importlib -ra $TESTS" || status=1
fi
stamp "done, status $status"
exit $status
