"""A long run's folder, written as scorch writes it: run.json and an events.jsonl of N lines.

The mix follows a real long run on 2 ranks: a `step` event every 0.25 s (the trainer throttles them),
a `system` event every 2 s (both ranks, a GPU each), then at each epoch's end `epoch_end` and
`checkpoint_saved`, with a warning now and then. `lines=226_000` is the replay the issue measured
(about 14 hours of training). No torch: the dashboard's tests and bench/replay_load.py use it.
"""

from __future__ import annotations

import json
import math
import os
import random

from scorch.telemetry.protocol import CheckpointSaved, EpochEnd, Log, RunEnded, RunStarted, Step, System

T0 = 1_730_000_000.0  # the long run's start (2024-10-27 03:33:20 UTC)
STEP_EVERY = 0.25  # seconds between step events
SYSTEM_EVERY = 8  # step events between system events (2 s)
STEPS_PER_EVENT = 10  # optimizer steps a step event covers
HOSTS = ["gpu-a", "gpu-b"]
CONFIG = {"model": "examples/char_transformer/model.py", "dataset": "examples/char_transformer/dataset.py",
          "dataset_path": "/data/shakespeare", "epochs": 50, "batch_size": 64, "accumulate": 2, "amp": "bf16",
          "seed": 1234, "workers": 4, "device": "auto", "backend": "auto", "clip_grad_norm": 1.0,
          "monitor": "loss", "mode": "min", "early_stop_patience": 5, "telemetry": True}


def write_long_run(run_dir: str, lines: int = 226_000, epochs: int = 50, status: str = "completed") -> int:
    """Write a finished run of about `lines` events into `run_dir`; returns the number of lines written."""
    os.makedirs(run_dir, exist_ok=True)
    # Step events per epoch so that the whole log is `lines` long: per epoch, s steps + s/8 system + 2 end lines.
    per_epoch = max(1, int((lines - 2) / epochs / (1 + 1 / SYSTEM_EVERY) - 2 / (1 + 1 / SYSTEM_EVERY)))
    rng = random.Random(7)
    seq, now, written = 0, T0, 0
    out = open(os.path.join(run_dir, "events.jsonl"), "w")

    def put(event) -> None:  # type: ignore[no-untyped-def]
        nonlocal seq, written
        seq += 1
        written += 1
        out.write(event.stamped(seq, now).to_json() + "\n")

    with out:
        config = {**CONFIG, "epochs": epochs, "run_dir": run_dir}
        put(RunStarted(name=os.path.basename(run_dir), run_dir=run_dir, model=CONFIG["model"], dataset=CONFIG["dataset"],
                       epochs=epochs, steps_per_epoch=per_epoch * STEPS_PER_EVENT, batch_size=64, world_size=2,
                       hosts=HOSTS, device="cuda:0", backend="torch", pid=4242, config=config))
        step = 0
        best = math.inf
        for epoch in range(epochs):
            for done in range(1, per_epoch + 1):
                if written >= lines - 3:
                    break
                now += STEP_EVERY * rng.uniform(0.9, 1.1)
                step += STEPS_PER_EVENT
                loss = 4.0 / (1 + step / 5000) + 0.05 * rng.random()
                put(Step(epoch=epoch, step=step, epoch_step=done * STEPS_PER_EVENT, steps_in_epoch=per_epoch * STEPS_PER_EVENT,
                         loss=loss, rate=STEPS_PER_EVENT * 64 * 2 / STEP_EVERY * rng.uniform(0.95, 1.05),
                         lr=3e-4 * (1 - step / (epochs * per_epoch * STEPS_PER_EVENT)), grad_norm=rng.uniform(0.5, 2.0)))
                if done % SYSTEM_EVERY == 0:
                    put(System(ranks=[_rank(rank, rng) for rank in range(2)]))
            if written >= lines - 3:
                break
            now += 30.0  # validation
            valid = 4.2 / (1 + step / 5000)
            best = min(best, valid)
            put(EpochEnd(epoch=epoch, step=step, train_loss=4.0 / (1 + step / 5000), metrics={"main": valid, "loss": valid},
                         best={"value": best, "epoch": epoch}, lr=3e-4, duration=per_epoch * STEP_EVERY + 30.0))
            put(CheckpointSaved(path=os.path.join(run_dir, "checkpoints", "last.pt"), reason="epoch", epoch=epoch + 1,
                                step=step))
            if epoch % 10 == 9:
                put(Log(level="warning", message=f"rank 1: data loader waited {rng.uniform(1, 3):.1f} s for a batch"))
        now += 1.0
        put(RunEnded(status=status, epoch=epochs, step=step))
    info = {"name": os.path.basename(run_dir), "config": config, "world_size": 2, "hosts": HOSTS, "backend": "torch",
            "pid": 4242, "started": T0, "state": status, "device": "cuda:0", "ended": now}
    with open(os.path.join(run_dir, "run.json"), "w") as fh:
        json.dump(info, fh)
    return written


def _rank(rank: int, rng: random.Random) -> dict:
    return {"rank": rank, "host": HOSTS[rank], "cpu": rng.uniform(90, 110), "ram": int(6.1e9 + rank * 1e8),
            "ram_total": 64 * 2**30, "host_cpu": rng.uniform(40, 60), "host_ram": int(30e9 + rank * 1e9),
            "step_time": 0.024 * rng.uniform(0.95, 1.05), "data_time": 0.002,
            "gpus": [{"index": 0, "name": "NVIDIA A100-SXM4-80GB", "util": rng.uniform(85, 99), "mem_used": 61 * 2**30,
                      "mem_total": 80 * 2**30, "temp": 63.0, "power": 310.0}],
            "state": "live", "seen": 0.4, "pid": 4242 + rank, "step": 0, "phase": "training", "collective_wait": 0.001}
