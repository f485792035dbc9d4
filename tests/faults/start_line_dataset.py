"""The two-input example's dataset with a start line, for races between processes (tests/faults, bench/fault_drill.py).

Its last DataSet (mode "test", built just before scorch-train takes the run folder) says it is ready
($SCORCH_TEST_GO.ready.PID), then spins until the file $SCORCH_TEST_GO exists (at most 120 s): two
processes released together then take the run folder within a fraction of a millisecond of each other.
Without $SCORCH_TEST_GO it is the plain example.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples"))
from two_inputs.dataset import DataSet as TwoInputs  # noqa: E402
from two_inputs.dataset import DataSetIndex  # noqa: E402, F401


class DataSet(TwoInputs):
    def __init__(self, index, mode="train"):
        super().__init__(index, mode)
        go = os.environ.get("SCORCH_TEST_GO", "")
        if mode == "test" and go:
            open(go + f".ready.{os.getpid()}", "w").close()
            deadline = time.monotonic() + 120
            while not os.path.exists(go) and time.monotonic() < deadline:
                pass  # spin, not sleep: the release is within microseconds
