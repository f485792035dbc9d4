"""One epoch of examples/two_inputs with a step event every step, watched (or not) by frozen subscribers.

Run as a script by test_live_run.py, twice at the same time (side by side, so
both share whatever else loads the machine): `python watched_run.py RUN_DIR
frozen|none`. Prints one JSON line: the step times in seconds and the RSS
growth in bytes over the epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch
import zmq

import scorch.trainer
from scorch.callbacks import Callback
from scorch.config import TrainConfig
from scorch.telemetry.protocol import Step

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "two_inputs"


class StepClock(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def event(self, event) -> None:
        if isinstance(event, Step):
            self.times.append(time.perf_counter())


def main(run_dir: str, watchers: str) -> None:
    torch.set_num_threads(1)  # both runs share the machine fairly
    scorch.trainer.STEP_EVENT_INTERVAL = 0.0  # every step is an event: the worst case for the stream
    config = TrainConfig(model=str(EXAMPLE / "model.py"), dataset=str(EXAMPLE / "dataset.py"), dataset_path=str(EXAMPLE),
                         dataset_args={"size": 10000}, epochs=1, seed=1, run_dir=run_dir, headless=True,
                         tensorboard=False, log_interval=1e9, max_valid_iterations=1, max_test_iterations=0)
    trainer = scorch.trainer.build(config)
    clock = StepClock()
    trainer.callbacks.append(clock)
    endpoint = json.loads((Path(run_dir) / "run.json").read_text())["telemetry"]["publish"]
    context = zmq.Context()
    sub = stopped = None
    try:
        if watchers == "frozen":
            # A subscriber that never reads, and a subscriber process that is SIGSTOPped.
            sub = context.socket(zmq.SUB)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.setsockopt(zmq.RCVHWM, 1)
            sub.connect(endpoint)
            stopped = subprocess.Popen([sys.executable, "-c", (
                "import time, zmq\n"
                "s = zmq.Context().socket(zmq.SUB); s.setsockopt(zmq.SUBSCRIBE, b''); s.setsockopt(zmq.RCVHWM, 1)\n"
                f"s.connect({endpoint!r}); print('ready', flush=True); time.sleep(300)\n")], stdout=subprocess.PIPE)
            assert stopped.stdout.readline() == b"ready\n"
        time.sleep(0.5)
        if stopped is not None:
            os.kill(stopped.pid, signal.SIGSTOP)
        rss_before = psutil.Process().memory_info().rss
        trainer.fit()
        rss_after = psutil.Process().memory_info().rss
    finally:
        trainer.close()
        if stopped is not None:
            os.kill(stopped.pid, signal.SIGCONT)
            stopped.kill()
            stopped.wait()
        if sub is not None:
            sub.close(linger=0)
        context.term()
    times = [b - a for a, b in zip(clock.times[5:], clock.times[6:])]  # skip the warm-up steps
    print(json.dumps({"step_times": times, "rss_growth": rss_after - rss_before}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
