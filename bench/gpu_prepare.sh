#!/usr/bin/env bash
# Run here, on a machine that reaches the package index, before bench/gpu_check.sh runs on a GPU machine that
# reaches nothing: puts into .whl/ (git-ignored) the wheels scorch needs that a CUDA image usually lacks.
# torch, numpy, psutil, Pillow, rich, pytest and Lightning are taken from the GPU machine's own Python.
#   bash bench/gpu_prepare.sh [PYTHON_VERSION]     (default 3.12, the version of the GPU machine's python3)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-3.12}
mkdir -p .whl
rm -f .whl/*.whl
platforms=()
for n in 2_28 2_27 2_17 2014 1; do
  case $n in 2014|1) platforms+=(--platform "manylinux${n}_x86_64") ;; *) platforms+=(--platform "manylinux_${n}_x86_64") ;; esac
done
# The names pip would pull in for scorch and scorch-tui beyond what a CUDA PyTorch image has; one version of each.
wanted=(pyzmq tensorboardX textual mdit-py-plugins platformdirs linkify-it-py uc-micro-py nvidia-ml-py)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp "${platforms[@]}" \
  -d .whl "${wanted[@]}"
ls -1 .whl
echo "gpu_prepare.sh: $(ls .whl | wc -l) wheels in .whl/ ($(du -sh .whl | cut -f1)); carry .whl to the GPU machine"
