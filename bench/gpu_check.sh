#!/usr/bin/env bash
# The GPU path on a real GPU, in one run of under 8 minutes on one GPU (issue: "The GPU path, proven on a real GPU").
#
#   bash bench/gpu_prepare.sh            # here, with the package index: wheels the GPU image lacks -> .whl/
#   bash bench/gpu_check.sh [OUT_DIR]    # there, from the repository root; results in OUT_DIR (default $OUT or gpu-results)
#   bash bench/gpu_check.sh --cpu        # the same steps on the CPU, to check the script itself on a machine without a GPU
#   STEPS="live torchrun" bash bench/gpu_check.sh OUT   # only those groups: facts tests examples overhead live torchrun
#
# Steps, each timed and recorded whatever the others do (a lease is short: one failure must not hide the rest):
#   1. install: the wheels in .whl/ (if any) into a private folder, scorch itself without its dependencies
#   2. facts: nvidia-smi, torch and its CUDA
#   3. the CUDA-marked tests (tests/cuda: device placement, 2018 numpy metrics, GPU checkpoint on a CPU-only
#      process, fp16 AMP with GradScaler, bf16, no host-device sync per step, two ranks on one GPU)
#   4. the digits example and the CNN with --device cuda, fp32 and --amp bf16
#   5. bench/overhead.py on CUDA: plain vs plain-again (the control) vs scorch-live vs Lightning, CNN, 3 rounds
#   6. a live run: its `system` events with real NVML figures, and a capture of scorch-tui showing them
#   7. torch.distributed with 2 ranks (torchrun; nccl with a GPU per rank, else gloo carrying CUDA tensors)
# It writes OUT_DIR/gpu_results.md (quoted by the README) beside the logs.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEVICE=cuda
if [ "${1:-}" = "--cpu" ]; then DEVICE=cpu; shift; fi
RESULTS_DIR=${1:-${OUT:-$ROOT/gpu-results}}
mkdir -p "$RESULTS_DIR"
RESULTS_DIR=$(cd "$RESULTS_DIR" && pwd)
REPORT=$RESULTS_DIR/gpu_results.md
WORK=$(mktemp -d /tmp/scorch-gpu-check.XXXXXX)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
SECONDS=0
failures=0

log() { echo "[gpu_check $(printf '%3d' $SECONDS)s] $*"; }
record() { printf '%s\n' "$@" >>"$REPORT"; }

# step NAME LIMIT_S COMMAND...: runs it with a time limit, its output in RESULTS_DIR/NAME.log, one table row.
step() {
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  log "$name: $*"
  timeout --kill-after=10 "$limit" "$@" >"$RESULTS_DIR/$name.log" 2>&1
  local rc=$?
  local took=$((SECONDS - start)) verdict=ok
  if [ $rc -ne 0 ]; then verdict="FAILED (exit $rc$([ $rc -eq 124 ] && echo ", over ${limit} s"))"; failures=$((failures + 1)); fi
  log "$name: $verdict in ${took}s"
  ROWS+=("| $name | $verdict | ${took} s | $(tail -n 1 "$RESULTS_DIR/$name.log" | tr '|' '/' | cut -c1-110) |")
  return $rc
}
ROWS=()
STEPS=${STEPS:-facts tests examples overhead live torchrun}
want() { [[ " $STEPS " == *" $1 "* ]]; }

# -- 1. install ---------------------------------------------------------------------------------------
SITE=$WORK/site
mkdir -p "$SITE" "$WORK/bin"
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || log "warning: some carried wheels did not install"
fi
# scorch from this tree, without pip: the import names (scorch, scorch_tui = tui/) and the three commands.
ln -sfn "$ROOT/scorch" "$SITE/scorch"
ln -sfn "$ROOT/tui" "$SITE/scorch_tui"
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
for cmd in "scorch-train scorch.cli main" "scorch-ctl scorch.ctl console_main" "scorch-tui scorch_tui.cli main"; do
  set -- $cmd
  printf '#!/bin/sh\nexec %s -c "import sys; from %s import %s as m; sys.argv[0] = \\"%s\\"; m()" "$@"\n' \
    "$(command -v "$PY")" "$2" "$3" "$1" >"$WORK/bin/$1"
  chmod +x "$WORK/bin/$1"
done
export PATH=$WORK/bin:$PATH

: >"$REPORT"
record "# scorch on a GPU: bench/gpu_check.sh" "" "$(date -u '+%Y-%m-%d %H:%M UTC'), device $DEVICE, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" ""

# -- 2. facts -----------------------------------------------------------------------------------------
want facts && step facts 120 "$PY" -c "
import sys, torch, scorch, scorch_tui
print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda,
      '| gpus', torch.cuda.device_count(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')
"
want facts && command -v nvidia-smi >/dev/null && nvidia-smi >"$RESULTS_DIR/nvidia-smi.log" 2>&1
want facts && record '```' "$(cat "$RESULTS_DIR/facts.log")" '```' ""

# -- 3. the CUDA tests --------------------------------------------------------------------------------
want tests && step cuda-tests 240 "$PY" -m pytest -q -p no:cacheprovider -rs tests/cuda

# -- 4. the examples on the device --------------------------------------------------------------------
DIGITS=(--dataset examples/digits/dataset.py --dataset-path examples/digits --headless --no-telemetry --seed 1)
want examples && step digits 120 scorch-train --model examples/digits/model.py "${DIGITS[@]}" --device "$DEVICE" --run-dir "$WORK/digits" --epochs 10
want examples && step digits-bf16 120 scorch-train --model examples/digits/model.py "${DIGITS[@]}" --device "$DEVICE" --amp bf16 --run-dir "$WORK/digits-bf16" --epochs 10
want examples && step cnn 120 scorch-train --model bench/digits_cnn.py "${DIGITS[@]}" --device "$DEVICE" --run-dir "$WORK/cnn" --epochs 10
want examples && step cnn-bf16 120 scorch-train --model bench/digits_cnn.py "${DIGITS[@]}" --device "$DEVICE" --amp bf16 --run-dir "$WORK/cnn-bf16" --epochs 10

# -- 5. overhead on the device ------------------------------------------------------------------------
variants=plain,plain-again,scorch-live
"$PY" -c "import lightning" 2>/dev/null && variants=$variants,lightning
want overhead && step overhead 240 "$PY" bench/overhead.py --device "$DEVICE" --workloads cnn --rounds 3 --variants "$variants" \
  --threads "$OMP_NUM_THREADS" --json "$RESULTS_DIR/overhead.json"

# -- 6. a live run: real NVML figures in `system` events, and the dashboard showing them -------------
LIVE=$WORK/live
if want live; then
scorch-train --model bench/digits_cnn.py "${DIGITS[@]/--no-telemetry/--telemetry}" --device "$DEVICE" --run-dir "$LIVE" \
  --epochs 1000 >"$RESULTS_DIR/live-run.log" 2>&1 &
live_pid=$!
step live-system 90 "$PY" - "$LIVE" "$DEVICE" <<'EOF'
import json, os, sys, time
events, need_gpu = os.path.join(sys.argv[1], "events.jsonl"), sys.argv[2] == "cuda"
deadline = time.monotonic() + 80
while time.monotonic() < deadline:
    try:
        with open(events) as fh:
            found = [json.loads(l) for l in fh if '"type": "system"' in l or '"type":"system"' in l]
    except (OSError, ValueError):
        found = []
    gpus = [g for e in found for r in e.get("ranks", []) for g in r.get("gpus", [])]
    if len(found) >= 3 and (gpus or not need_gpu):
        print(json.dumps(found[-1]["ranks"], indent=1))
        g = gpus[-1] if gpus else {}
        print("NVML:", ", ".join(f"{k}={g[k]}" for k in sorted(g)) or "no GPU entry (--cpu)")
        sys.exit(0)
    time.sleep(1)
print(f"no system event with a GPU entry in 80 s ({len(found)} system events)")
sys.exit(1)
EOF
TMUX_BIN=${TMUX_BIN-$(command -v tmux)}  # TMUX_BIN= forces the Textual capture below
if [ -n "$TMUX_BIN" ]; then
  step dashboard 60 bash -c "tmux -L scorch-gpu kill-server 2>/dev/null; tmux -L scorch-gpu new-session -d -x 120 -y 40 \
    'scorch-tui $LIVE' && sleep 12 && tmux -L scorch-gpu capture-pane -p >'$RESULTS_DIR/dashboard.txt'; \
    tmux -L scorch-gpu kill-server; grep -c . '$RESULTS_DIR/dashboard.txt'"
else  # no tmux on the image: the same app under Textual's test pilot, saved as SVG and as text
  step dashboard 60 "$PY" - "$LIVE" "$RESULTS_DIR" <<'EOF'
import asyncio, sys
from scorch_tui.app import ScorchApp
from scorch_tui.cli import run_dir_source

async def main(run_dir: str, out: str) -> None:
    app = ScorchApp(run_dir_source(run_dir, None, False, None))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(10)
        app.save_screenshot(filename="dashboard.svg", path=out)
        import io
        from rich.console import Console  # as App.export_screenshot renders the screen, kept as text
        console = Console(width=120, height=40, file=io.StringIO(), force_terminal=True, record=True)
        console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
        open(f"{out}/dashboard.txt", "w").write(console.export_text())
    print("captured", out)

asyncio.run(main(sys.argv[1], sys.argv[2]))
EOF
fi
scorch-ctl "$LIVE" stop >>"$RESULTS_DIR/live-run.log" 2>&1 || kill "$live_pid" 2>/dev/null
wait "$live_pid" 2>/dev/null
fi

# -- 7. two ranks ---------------------------------------------------------------------------------------
want torchrun && step torchrun-2 180 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m scorch.cli \
  --model examples/two_inputs/model.py --dataset examples/two_inputs/dataset.py --dataset-path examples/two_inputs \
  --dataset-args '{"size": 4096}' --device "$DEVICE" --epochs 2 --batch-size 32 --headless --no-telemetry \
  --run-dir "$WORK/torchrun-2" --seed 1

# -- the report -----------------------------------------------------------------------------------------
record "| step | result | time | last line of its log |" "|---|---|--:|---|" "${ROWS[@]}" ""
for run in digits digits-bf16 cnn cnn-bf16; do
  [ -f "$RESULTS_DIR/$run.log" ] && record "- $run: $(grep '^epoch 10/10' "$RESULTS_DIR/$run.log" | tail -n 1)"
done
want overhead && record "" "## Overhead on $DEVICE (bench/overhead.py --device $DEVICE --workloads cnn --rounds 3)" "" \
  "$(sed -n '/^| variant/,/^$/p' "$RESULTS_DIR/overhead.log")" ""
want live && record "## NVML figures from a live run's system events" '```' "$(tail -n 1 "$RESULTS_DIR/live-system.log")" '```' ""
[ -f "$RESULTS_DIR/dashboard.txt" ] && record "## scorch-tui on the live run (120x40)" '```text' "$(cat "$RESULTS_DIR/dashboard.txt")" '```'
record "" "$failures step(s) failed; total ${SECONDS} s."
rm -rf "$WORK"
log "done: $failures failed, ${SECONDS}s; report $REPORT"
exit $((failures > 0))
