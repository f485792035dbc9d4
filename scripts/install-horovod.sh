#!/usr/bin/env bash
# Install Horovod (PyTorch support, MPI + Gloo, optional NCCL) into the current
# Python environment, built against the torch that is already installed.
#
# Horovod 0.28.1 (the last release) asks CMake for C++14, which torch 2.x
# headers reject, so we build from the sdist with C++17 patched in and cache
# the resulting wheel keyed by horovod/torch/python version and GPU ops.
set -euo pipefail

HOROVOD_VERSION=0.28.1
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if command -v python >/dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
fi
CACHE_DIR="${SCORCH_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scorch/wheels}"

FORCE=0
VERIFY=1

usage() {
    cat <<EOF
Usage: scripts/install-horovod.sh [--force] [--skip-verify] [--help]

Installs Horovod ${HOROVOD_VERSION} with PyTorch support into the current Python
environment (\$PYTHON, default: python), built against the installed torch.

  --force         rebuild the wheel even if a cached one exists
  --skip-verify   skip the post-install checks (check-build, mpirun -np 2 allreduce)
  -h, --help      show this help

Environment:
  SCORCH_WHEEL_CACHE      wheel cache dir (default: \${XDG_CACHE_HOME:-\$HOME/.cache}/scorch/wheels);
                          keep the folder between machines (CI) to skip the build
  HOROVOD_GPU_OPERATIONS  set to NCCL to build with NCCL (needs nvcc/CUDA and a
                          CUDA build of torch); otherwise CPU-only (MPI + Gloo)
  HOROVOD_NCCL_HOME, HOROVOD_NCCL_INCLUDE, HOROVOD_NCCL_LIB
                          passed through to the build when NCCL is requested
  PYTHON                  python interpreter to install into

The build takes 4 minutes on an idle 2-core machine and up to 40 on a loaded one;
a line every 30 s says how long it has run.

Prerequisites: torch (pip install torch), OpenMPI (apt-get install openmpi-bin
libopenmpi-dev), cmake and a C++ compiler. As root with apt-get, missing
system packages are installed automatically.

Running as root: mpirun needs --allow-run-as-root (or
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 in the environment).
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --force) FORCE=1 ;;
        --skip-verify) VERIFY=0 ;;
        *) echo "error: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

log() { echo "[install-horovod] $*"; }

# "$@" in the background, with a line every 30 s saying how long it has run (pip only says "still running").
with_progress() {
    local what=$1 start=$SECONDS pid
    shift
    "$@" &
    pid=$!
    trap 'kill "$pid" 2>/dev/null; exit 130' INT TERM
    local next=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        if ((SECONDS >= next)); then
            log "$what: $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s so far"
            next=$((next + 30))
        fi
    done
    trap 'exit 130' INT TERM
    wait "$pid"
}
die() { echo "[install-horovod] error: $*" >&2; exit 1; }

IS_ROOT=0
[[ "$(id -u)" = 0 ]] && IS_ROOT=1
MPIRUN_ROOT_ARGS=()
[[ $IS_ROOT = 1 ]] && MPIRUN_ROOT_ARGS=(--allow-run-as-root)

SECONDS=0

# --------------------------------------------------------------------------
# 1. torch must already be installed (never pip install a bare torch here:
#    that pulls the multi-GB CUDA build).
# --------------------------------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "python interpreter '$PYTHON' not found"
if ! TORCH_INFO="$("$PYTHON" -c 'import sys, torch; print(torch.__version__, torch.version.cuda or "none", "cp%d%d" % sys.version_info[:2])' 2>/dev/null)"; then
    die "torch is not importable with $PYTHON; install torch first: pip install torch
       (CPU-only: pip install torch --index-url https://download.pytorch.org/whl/cpu)"
fi
read -r TORCH_VERSION TORCH_CUDA PY_TAG <<<"$TORCH_INFO"
log "python $PY_TAG, torch $TORCH_VERSION (cuda: $TORCH_CUDA)"

# --------------------------------------------------------------------------
# 2. GPU operations: NCCL only when explicitly requested.
# --------------------------------------------------------------------------
GPU_OPS=cpu
if [[ -n "${HOROVOD_GPU_OPERATIONS:-}" ]]; then
    [[ "${HOROVOD_GPU_OPERATIONS^^}" = NCCL ]] \
        || die "unsupported HOROVOD_GPU_OPERATIONS=$HOROVOD_GPU_OPERATIONS (only NCCL, or unset for CPU)"
    NVCC="$(command -v nvcc || true)"
    if [[ -z "$NVCC" && -n "${CUDA_HOME:-}" && -x "$CUDA_HOME/bin/nvcc" ]]; then NVCC="$CUDA_HOME/bin/nvcc"; fi
    if [[ -z "$NVCC" && -x /usr/local/cuda/bin/nvcc ]]; then NVCC=/usr/local/cuda/bin/nvcc; fi
    [[ -n "$NVCC" ]] || die "HOROVOD_GPU_OPERATIONS=NCCL but no CUDA toolkit found (nvcc not on PATH, \$CUDA_HOME unset).
       Install the CUDA toolkit, or unset HOROVOD_GPU_OPERATIONS for a CPU (MPI+Gloo) build."
    [[ "$TORCH_CUDA" != none ]] || die "HOROVOD_GPU_OPERATIONS=NCCL but torch $TORCH_VERSION is a CPU-only build.
       Install a CUDA build of torch, or unset HOROVOD_GPU_OPERATIONS for a CPU build."
    GPU_OPS=nccl
    log "NCCL requested; using nvcc at $NVCC"
fi

BUILD_KEY="horovod-${HOROVOD_VERSION}_torch-${TORCH_VERSION}_${PY_TAG}_${GPU_OPS}"
KEY_DIR="$CACHE_DIR/$BUILD_KEY"

# --------------------------------------------------------------------------
# 3. Already installed and built for this exact key? Then we are done.
#    (The wheels we build carry horovod/_scorch_build.py with the key.)
# --------------------------------------------------------------------------
check_build() {
    log "horovodrun --check-build:"
    horovodrun --check-build
}

installed_key() {
    "$PYTHON" - <<'EOF' 2>/dev/null
import horovod
from horovod._scorch_build import BUILD_KEY
import horovod.torch  # noqa: F401  (fails if the extension does not load against this torch)
print(horovod.__version__, BUILD_KEY)
EOF
}

if [[ $FORCE = 0 ]]; then
    if CUR="$(installed_key)" && [[ "$CUR" = "$HOROVOD_VERSION $BUILD_KEY" ]]; then
        log "horovod $HOROVOD_VERSION is already installed with torch support, built for $BUILD_KEY; nothing to do"
        [[ $VERIFY = 1 ]] && check_build
        exit 0
    fi
fi

# --------------------------------------------------------------------------
# 4. System prerequisites: OpenMPI, cmake, C++ compiler.
# --------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    if [[ $APT_UPDATED = 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}
can_apt() { [[ $IS_ROOT = 1 ]] && command -v apt-get >/dev/null 2>&1; }

if ! command -v mpirun >/dev/null 2>&1 || ! command -v mpicxx >/dev/null 2>&1; then
    if can_apt; then
        log "OpenMPI not found; installing openmpi-bin libopenmpi-dev"
        apt_install openmpi-bin libopenmpi-dev
    else
        die "OpenMPI (mpirun and mpicxx) not found. Install it first, e.g.
         sudo apt-get update && sudo apt-get install -y openmpi-bin libopenmpi-dev
       (Fedora: dnf install openmpi openmpi-devel; macOS: brew install open-mpi; conda: conda install -c conda-forge openmpi)"
    fi
fi

MISSING_PKGS=()
command -v cmake >/dev/null 2>&1 || MISSING_PKGS+=(cmake)
{ command -v g++ >/dev/null 2>&1 || command -v c++ >/dev/null 2>&1; } || MISSING_PKGS+=(g++)
command -v make >/dev/null 2>&1 || MISSING_PKGS+=(make)
if [[ ${#MISSING_PKGS[@]} -gt 0 ]]; then
    if can_apt; then
        log "installing build tools: ${MISSING_PKGS[*]}"
        apt_install "${MISSING_PKGS[@]}"
    else
        die "missing build tools: ${MISSING_PKGS[*]}. Install them first, e.g.
         sudo apt-get install -y cmake g++ make"
    fi
fi

# --------------------------------------------------------------------------
# 5. Horovod's runtime deps (also its build deps under --no-build-isolation).
# --------------------------------------------------------------------------
ensure_py_deps() {
    local missing
    missing="$("$PYTHON" - <<'EOF'
import importlib.util
mods = {"cloudpickle": "cloudpickle", "psutil": "psutil", "yaml": "pyyaml",
        "packaging": "packaging", "cffi": "cffi>=1.4.0", "setuptools": "setuptools",
        "wheel": "wheel"}
print(" ".join(pkg for mod, pkg in mods.items() if importlib.util.find_spec(mod) is None))
EOF
)"
    if [[ -n "$missing" ]]; then
        log "installing python deps: $missing"
        # shellcheck disable=SC2086
        "$PYTHON" -m pip install --quiet $missing
    fi
}
ensure_py_deps

# --------------------------------------------------------------------------
# 6. Build the wheel into the cache (unless cached).
# --------------------------------------------------------------------------
mkdir -p "$CACHE_DIR"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE_DIR/.install-horovod.lock"
    flock 9   # serialise concurrent builds of the same cache
    # holding the lock, any leftover .partial dir is from a killed run
    rm -rf "$CACHE_DIR"/.*.partial.* 2>/dev/null || true
fi

find_wheel() { compgen -G "$KEY_DIR/horovod-${HOROVOD_VERSION}-*.whl" | head -n 1 || true; }

WHEEL=""
[[ $FORCE = 0 ]] && WHEEL="$(find_wheel)"

if [[ -n "$WHEEL" ]]; then
    log "using cached wheel $WHEEL"
else
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/scorch-horovod.XXXXXX")"
    PARTIAL="$CACHE_DIR/.${BUILD_KEY}.partial.$$"
    trap 'rm -rf "$WORK" "$PARTIAL"' EXIT
    trap 'exit 130' INT TERM   # make sure the EXIT cleanup runs on Ctrl-C / kill

    log "downloading horovod==$HOROVOD_VERSION sdist"
    "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$WORK"
    SDIST="$(compgen -G "$WORK/horovod-${HOROVOD_VERSION}.tar.gz" || true)"
    [[ -n "$SDIST" ]] || die "pip download did not produce horovod-${HOROVOD_VERSION}.tar.gz in $WORK"
    tar -xzf "$SDIST" -C "$WORK"
    SRC="$WORK/horovod-$HOROVOD_VERSION"
    [[ -d "$SRC" ]] || die "unexpected sdist layout (no $SRC)"

    # C++14 -> C++17 (torch 2.x requires C++17).
    for f in "$SRC/CMakeLists.txt" "$SRC/horovod/torch/CMakeLists.txt"; do
        [[ -f "$f" ]] || die "expected file not found in sdist: $f"
        sed -E -i 's/(set[[:space:]]*\([[:space:]]*CMAKE_CXX_STANDARD[[:space:]]+)"?14"?([[:space:]]*\))/\117\2/' "$f"
        if grep -Eq 'CMAKE_CXX_STANDARD[[:space:]]+"?14"?[[:space:]]*\)' "$f" \
           || ! grep -Eq 'set[[:space:]]*\([[:space:]]*CMAKE_CXX_STANDARD[[:space:]]+17[[:space:]]*\)' "$f"; then
            die "failed to patch C++ standard 14 -> 17 in ${f#"$WORK"/}; horovod's CMake files changed, check them by hand"
        fi
    done
    log "patched CMAKE_CXX_STANDARD 14 -> 17"

    # Record the build key inside the wheel so reruns can tell what it was built against.
    echo "BUILD_KEY = \"$BUILD_KEY\"" >"$SRC/horovod/_scorch_build.py"

    BUILD_ENV=()
    if [[ $GPU_OPS = nccl ]]; then
        BUILD_ENV+=(HOROVOD_GPU_OPERATIONS=NCCL)
    else
        # make sure stray GPU settings cannot leak into a CPU build
        for v in HOROVOD_GPU_OPERATIONS HOROVOD_GPU HOROVOD_GPU_ALLREDUCE HOROVOD_GPU_ALLGATHER \
                 HOROVOD_GPU_BROADCAST HOROVOD_GPU_ALLTOALL HOROVOD_GPU_REDUCESCATTER; do
            BUILD_ENV+=(-u "$v")
        done
    fi
    BUILD_ENV+=(
        HOROVOD_WITH_PYTORCH=1
        HOROVOD_WITH_MPI=1
        HOROVOD_WITH_GLOO=1
        HOROVOD_WITHOUT_TENSORFLOW=1
        HOROVOD_WITHOUT_MXNET=1
        MAKEFLAGS="${MAKEFLAGS:--j$(nproc 2>/dev/null || echo 2)}"
    )

    log "building horovod $HOROVOD_VERSION wheel for $BUILD_KEY into $CACHE_DIR (4-40 minutes, by the machine and its load)"
    mkdir -p "$PARTIAL"
    BUILD_START=$SECONDS
    with_progress "building horovod" env "${BUILD_ENV[@]}" "$PYTHON" -m pip wheel --no-deps --no-build-isolation -w "$PARTIAL" "$SRC"
    BUILT="$(compgen -G "$PARTIAL/horovod-${HOROVOD_VERSION}-*.whl" | head -n 1 || true)"
    [[ -n "$BUILT" ]] || die "pip wheel finished but produced no horovod wheel"
    log "built $(basename "$BUILT") in $((SECONDS - BUILD_START))s"

    rm -rf "$KEY_DIR"
    mv "$PARTIAL" "$KEY_DIR"   # atomic: a crashed build never leaves a cached wheel behind
    WHEEL="$(find_wheel)"
fi

# --------------------------------------------------------------------------
# 7. Install.
# --------------------------------------------------------------------------
log "installing $(basename "$WHEEL")"
"$PYTHON" -m pip install --quiet --force-reinstall --no-deps "$WHEEL"
CUR="$(installed_key)" || die "horovod installed but 'import horovod.torch' fails with $PYTHON"
[[ "$CUR" = "$HOROVOD_VERSION $BUILD_KEY" ]] || die "installed horovod reports '$CUR', expected '$HOROVOD_VERSION $BUILD_KEY'"
log "installed horovod $HOROVOD_VERSION ($BUILD_KEY) in ${SECONDS}s"

# --------------------------------------------------------------------------
# 8. Verify (short).
# --------------------------------------------------------------------------
if [[ $VERIFY = 1 ]]; then
    check_build
    log "single-process init:"
    "$PYTHON" -c "import horovod.torch as hvd; hvd.init(); print('hvd.size() =', hvd.size())"

    ALLREDUCE_TEST='
import torch, horovod.torch as hvd
hvd.init()
n = hvd.size()
r = hvd.allreduce(torch.tensor([float(hvd.rank() + 1)]), op=hvd.Sum)
assert n == 2 and r.item() == n * (n + 1) / 2, (n, r)
if hvd.rank() == 0:
    print("allreduce ok: size=%d sum=%g" % (n, r.item()))
'
    log "mpirun -np 2 allreduce:"
    mpirun "${MPIRUN_ROOT_ARGS[@]}" --oversubscribe -np 2 "$PYTHON" -c "$ALLREDUCE_TEST"
fi

log "done in ${SECONDS}s"
