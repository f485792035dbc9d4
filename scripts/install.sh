#!/usr/bin/env bash
# Set up scorch on this machine: system packages, torch (CPU build unless one is there), scorch itself.
#   bash scripts/install.sh          what scorch-train and the examples need
#   bash scripts/install.sh --test   also what the test suite needs: OpenMPI, tmux, SLURM + munge, Horovod, test and lint extras
# Safe to run again: it skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

# System packages the tests drive for real: mpirun (Horovod), tmux (the dashboard end to end), SLURM.
if [ "$want_test" = 1 ]; then
  missing=()
  command -v mpirun >/dev/null || missing+=(openmpi-bin libopenmpi-dev)
  command -v tmux >/dev/null || missing+=(tmux)
  command -v cmake >/dev/null || missing+=(cmake)
  command -v g++ >/dev/null || missing+=(g++)
  # A one-node SLURM cluster and munge, which tests/distributed/test_slurm.py starts (and stops) itself.
  command -v slurmctld >/dev/null || [ -x /usr/sbin/slurmctld ] || missing+=(slurm-wlm)
  command -v munged >/dev/null || [ -x /usr/sbin/munged ] || missing+=(munge)
  # Two network namespaces joined by a veth pair (tests/distributed/test_two_hosts.py): `ip` from iproute2.
  command -v ip >/dev/null || [ -x /usr/sbin/ip ] || missing+=(iproute2)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "install.sh: apt-get install ${missing[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "install.sh: please install ${missing[*]} (e.g. sudo apt-get install ${missing[*]})" >&2
      exit 1
    fi
  fi
fi

# torch: keep one that is there; otherwise the CPU build 2.13.0 (a bare 'torch' pulls a multi-GB CUDA build).
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "install.sh: pip install torch==2.13.0 (set up a CUDA build yourself for GPUs: https://pytorch.org)"
  pip_install "torch==2.13.0" || pip_install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
fi

if [ "$want_test" = 1 ]; then
  pip_install -e ".[test,lint]"
  bash scripts/install-horovod.sh
else
  pip_install -e ".[examples]"
fi
echo "install.sh: ready"
