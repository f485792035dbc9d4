"""The fault drill, many times over: does a scorch run ever lose a checkpoint, resume inexactly, share its folder
with a second writer, load a damaged checkpoint, apply a command twice, hang or crash?

    python bench/fault_drill.py             # full: 50 kill -9, 20 SIGTERM, 20 two-writer, 50 damaged checkpoints,
                                            # 1,000 replays, >= 10,000 fuzzed control messages
    python bench/fault_drill.py --quick     # a few of each (minutes)
    python bench/fault_drill.py --kills 100 --preempts 40 --fuzz 50000 --seed 1
    python bench/fault_drill.py --kills 0 --preempts 0 --fuzz 0   # only the integrity rows (0 skips a row)

Every trial is a real `scorch-train` process (the two-input example, seeded, one intra-op thread)
and every fault is real: SIGKILL, SIGTERM, two processes released into one folder together, bytes
changed on disk, commands captured off the wire, and a separate process flooding the control socket.

  kill -9        One run folder that checkpoints many times a second (5-step epochs, last.pt,
                 best.pt and 2 kept epoch-K.pt of 4 MiB each). Each trial starts (or resumes)
                 it, waits for a checkpoint from that process, then SIGKILLs it: half the trials
                 at a random instant up to 1 s later, half as soon as a checkpoint write is under
                 way (its temporary file exists) plus 0-3 ms. After each kill every *.pt in the
                 folder must load with torch.load and events.jsonl must read with
                 scorch.events_log.read_events (which drops a torn last line); the next
                 trial resumes from that folder, and a last resume runs two more epochs to the end.
  SIGTERM        One straight run is the reference. Each trial starts a fresh run, sends SIGTERM
                 at a random step, expects exit 0, run_ended "preempted" and a checkpoint with
                 reason "signal", then resumes it to the end and compares the final weights and
                 optimizer state with the reference, bit for bit.
  two writers    Rounds of four: two fresh runs released into one new folder within microseconds (a
                 dataset that holds both at a start line, tests/faults/start_line_dataset.py), two
                 --resume of the finished folder released the same way, then a live run that a
                 --resume and a fresh run into its folder try to take. The second writer must exit 2
                 with one line naming the holder's pid; the folder must read as one writer's:
                 events.jsonl's seq 1, 2, 3... as written, run_started, run.json and lease.json only
                 from the winners, last.pt never going back, the live run's run.json and .token untouched.
  damaged        One finished run (last, prev, best, two epoch-K.pt, their .sha256 digests) copied for
                 each trial (hard links kept), 1, 2 or every checkpoint damaged in place (a bit flipped,
                 a weight's byte changed, random bytes over a run, a 512-byte sector zeroed; mtime put
                 back), then loaded by a real run: --resume RUN_DIR, --resume FILE or -c FILE in turn.
                 The model file records the weights it is handed, so "loaded" is what the run really
                 loaded: --resume RUN_DIR must take the newest intact file (its very weights), the others
                 exit 2 naming the damaged file; every damaged file must also fail checkpoint.load.
  replays        One live run with telemetry; `scorch-ctl checkpoint` is captured off the loopback
                 interface by a raw-socket eavesdropper (root) and its exact bytes, ZMTP handshake and
                 all, are sent again on new TCP connections, within the 30 s window and after it;
                 forgeries built from it (another key, a changed body or id or time, no mac, the token
                 in clear, signed an hour ago or ahead) go the same way. A captured `scorch-ctl stop`
                 ends the run; its resumed successor (a new token) gets both captures replayed. The bar:
                 no id applied twice, no accepted reply but the real commands'.
  fuzz           One live run with telemetry. Training speed (steps/s, from its own step events)
                 is measured quiet, while a flooder aims at a closed port (what the flooder's own
                 CPU takes from training on this machine), and while the flooder aims at the
                 run's control socket: random bytes, 100 KiB and 2 MiB messages, floods of hello,
                 wrong and missing tokens, random JSON, from 6 connections, half never reading.
                 After it a valid hello must be answered and `scorch-ctl stop` obeyed.
  flood memory   One live run, three floods in turn: 50,000 hostile messages as fast as one client
                 sends them, 500 subscribers that never read joining and leaving 4 times, a hello
                 storm (200 connections x 50 hellos, never read). The trainer's RSS before each,
                 its peak during it, and after: it must come back within 10 MiB (waited for, up to
                 5 minutes, since the backlog is answered at a tenth of a thread's time).

Hangs are trials that exceed their time limit (a process that neither progresses nor ends).
Crashes are processes that end in a way they should not (not killed by us, non-zero exit).
The bar: zero lost checkpoints, zero inexact resumes, zero folders written by two processes, zero damaged
checkpoints loaded, zero commands applied twice, zero hangs, zero crashes (exit code 0).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
EXAMPLE = os.path.join(ROOT, "examples", "two_inputs")
HOSTILE = os.path.join(ROOT, "tests", "faults", "hostile.py")
TRIAL_TIMEOUT = 180.0  # seconds any one process may take to reach the point a trial waits for

BALLAST_MODEL = f'''
import sys

import torch

sys.path.insert(0, {os.path.join(ROOT, "examples")!r})
from two_inputs.model import Network as TwoInputs, Socket  # noqa: F401


class Network(TwoInputs):
    """The two-input example with a buffer of `ballast_mb` MiB: checkpoint writes take a while."""

    def __init__(self, width=32, ballast_mb=0):
        super().__init__(width)
        self.register_buffer("ballast", torch.zeros(int(ballast_mb * 2**18)))
'''


class Hang(Exception):
    """A trial exceeded its time limit."""


def env(**extra: str) -> dict:
    """The children's environment: one intra-op thread (a spinning pool on a shared 2-core box makes
    a tiny model many times slower and every timing noise)."""
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    return e


def train_args(run_dir: str, *extra: str, size: int, model: str = "", telemetry: bool = False) -> list[str]:
    args = ["--model", model or os.path.join(EXAMPLE, "model.py"), "--dataset", os.path.join(EXAMPLE, "dataset.py"),
            "--dataset-path", EXAMPLE, "--dataset-args", json.dumps({"size": size}), "--run-dir", run_dir,
            "--headless", "--seed", "7", "--no-tensorboard"]
    return args + ([] if telemetry else ["--no-telemetry"]) + list(extra)


def raw_events(run_dir: str) -> list[dict]:
    """events.jsonl's whole lines as written (no seq checks: the drill counts what a reader would refuse)."""
    try:
        data = open(os.path.join(run_dir, "events.jsonl"), "rb").read()
    except OSError:
        return []
    out = []
    for line in data.split(b"\n")[:-1]:
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


class Proc:
    """A scorch-train process; stderr kept in a file beside its run folder."""

    def __init__(self, run_dir: str, args: list[str], **extra_env: str) -> None:
        self.run_dir = run_dir
        self.err_path = f"{run_dir}.{time.monotonic_ns()}.stderr"
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "scorch.cli", *args], env=env(**extra_env),
                                     stdout=subprocess.DEVNULL, stderr=self._err, start_new_session=True)

    def events(self) -> list[dict]:
        return raw_events(self.run_dir)

    def has(self, wanted: Any) -> Any:
        """A check for `wait_for`: the events of the run for which `wanted(event)` holds."""
        return lambda: [e for e in self.events() if wanted(e)]

    def wait_for(self, check: Any, timeout: float = TRIAL_TIMEOUT) -> Any:
        """Poll until check() is truthy; Hang past the timeout; None if the process ends first."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if self.proc.poll() is not None:
                return check() or None
            if time.monotonic() > deadline:
                raise Hang()
            time.sleep(0.01)

    def wait(self, timeout: float = TRIAL_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Hang() from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self._err.close()

    def stderr(self) -> str:
        try:
            return open(self.err_path, errors="replace").read()
        except OSError:
            return ""


def temp_files(run_dir: str) -> list[str]:
    return glob.glob(os.path.join(run_dir, "checkpoints", ".*.tmp"))


def check_folder(run_dir: str) -> tuple[int, int, str]:
    """(checkpoints that load, checkpoints that do not, first problem) for a run folder; the event log too."""
    from scorch import checkpoint as ckpt
    from scorch import events_log
    from scorch.errors import ScorchError

    good, bad, problem = 0, 0, ""
    for path in sorted(glob.glob(os.path.join(run_dir, "checkpoints", "*.pt"))):
        try:
            ckpt.load(path)
            good += 1
        except ScorchError as exc:
            bad += 1
            problem = problem or exc.message
    reader = events_log.Reader(events_log.path(run_dir))
    try:
        reader.events()
    except Exception as exc:  # noqa: BLE001 - any failure to read is what the drill counts
        bad += 1
        problem = problem or f"the event log does not read: {exc}"
    if reader.skipped or reader.refused:  # only a torn last line may be left by kill -9
        bad += 1
        problem = problem or reader.warning()
    return good, bad, problem


def equal(x: Any, y: Any) -> bool:
    """Tensors (dtype and every bit), dicts, lists and values, alike all the way down."""
    import torch

    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(equal(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return type(x) is type(y) and len(x) == len(y) and all(equal(i, j) for i, j in zip(x, y))
    return x == y


def same_state(a: dict, b: dict) -> bool:
    return equal(a["model_state"], b["model_state"]) and equal(a["optimizer_state"], b["optimizer_state"]) \
        and a["step"] == b["step"]


@dataclass
class Row:
    drill: str
    trials: int = 0
    loadable: str = "-"
    exact: str = "-"
    bar: str = "-"  # what must be 0, counted: "0 folders written by two processes"
    hangs: int = 0
    crashes: int = 0
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def fail(self, text: str) -> None:
        self.failures.append(text)
        print(f"  FAIL {self.drill}: {text}", file=sys.stderr, flush=True)


# -- kill -9 --------------------------------------------------------------------------------------

def kill_drill(work: str, trials: int, rng: random.Random) -> Row:
    from scorch import events_log

    row = Row("kill -9 at random instants")
    run_dir = os.path.join(work, "kill9")
    model = os.path.join(work, "ballast_model.py")
    with open(model, "w") as fh:
        fh.write(BALLAST_MODEL)
    args = train_args(run_dir, "--epochs", "1000000", "--max-train-iterations", "5", "--keep", "2",
                      "--model-args", '{"ballast_mb": 4}', size=2000, model=model)
    loaded = files_bad = mid_write = torn = resumed = 0
    seen = 0
    for trial in range(trials):
        aim = "anywhere" if trial % 2 == 0 else "mid-write"
        proc = Proc(run_dir, args)
        try:
            before = set(temp_files(run_dir))
            started = proc.wait_for(proc.has(lambda e, seen=seen: e["type"] == "checkpoint_saved" and e["seq"] > seen))
            if not started:
                row.crashes += 1
                row.fail(f"trial {trial}: the process ended (exit {proc.proc.returncode}) before checkpointing:\n"
                         f"{proc.stderr()[-2000:]}")
                break
            if trial:
                resumed += 1
            if aim == "anywhere":
                time.sleep(rng.uniform(0.0, 1.0))
            else:
                proc.wait_for(lambda before=before: set(temp_files(run_dir)) - before, timeout=60)
                time.sleep(rng.uniform(0.0, 0.003))
            if proc.proc.poll() is not None:
                row.crashes += 1
                row.fail(f"trial {trial}: ended on its own (exit {proc.proc.returncode}):\n{proc.stderr()[-2000:]}")
                break
            os.killpg(proc.proc.pid, signal.SIGKILL)
            proc.proc.wait()
        except Hang:
            row.hangs += 1
            row.fail(f"trial {trial}: no checkpoint within {TRIAL_TIMEOUT:.0f} s")
            proc.kill()
            break
        finally:
            proc.kill()
        row.trials += 1
        mid_write += bool(set(temp_files(run_dir)) - before)
        with open(events_log.path(run_dir), "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 1))
            torn += fh.read(1) != b"\n"
        good, bad, problem = check_folder(run_dir)
        loaded += good
        files_bad += bad
        if bad:
            row.fail(f"trial {trial}: {problem}")
        seen = events_log.read_events(events_log.path(run_dir))[-1].seq
        args = ["--resume", run_dir, "--headless"]
        print(f"  kill -9 trial {trial + 1}/{trials} ({aim}): {good} checkpoints load, {bad} do not", flush=True)
    # The last resume runs to the end: the folder is still a run.
    if row.trials == trials:
        from scorch import checkpoint as ckpt

        epochs = ckpt.load(os.path.join(run_dir, "checkpoints", "last.pt"))["epoch"] + 2
        proc = Proc(run_dir, [*args, "--epochs", str(epochs)])
        try:
            code = proc.wait()
        except Hang:
            row.hangs += 1
            code = None
        finally:
            proc.kill()
        ended = [e for e in proc.events() if e["type"] == "run_ended"]
        if code == 0 and ended and ended[-1]["status"] == "completed":
            resumed += 1
        else:
            row.crashes += code not in (0, None)
            row.fail(f"the final resume ended with exit {code}:\n{proc.stderr()[-2000:]}")
    stale = len(temp_files(run_dir))
    row.loadable = f"{loaded}/{loaded + files_bad} files"
    row.exact = f"{resumed}/{row.trials} resumed"
    row.bar = f"{files_bad} checkpoints lost"
    row.notes += [f"{mid_write} kills landed mid-write", f"{torn} torn log tails (skipped, then cut on resume)",
                  f"{stale} stale .tmp files left in checkpoints/"]
    return row


# -- SIGTERM --------------------------------------------------------------------------------------

PREEMPT_SIZE, PREEMPT_EPOCHS = 20_000, 2  # 500 steps an epoch: seconds of training, so the signal lands mid-run


def preempt_drill(work: str, trials: int, rng: random.Random) -> Row:
    from scorch import checkpoint as ckpt

    row = Row("SIGTERM at random steps")
    total = PREEMPT_EPOCHS * PREEMPT_SIZE * 8 // 10 // 32
    reference_dir = os.path.join(work, "straight")
    proc = Proc(reference_dir, train_args(reference_dir, "--epochs", str(PREEMPT_EPOCHS), size=PREEMPT_SIZE))
    try:
        code = proc.wait()
    finally:
        proc.kill()
    if code != 0:
        row.fail(f"the straight reference run failed (exit {code}):\n{proc.stderr()[-2000:]}")
        return row
    reference = ckpt.load(os.path.join(reference_dir, "checkpoints", "last.pt"))
    exact = preempted = loadable = missed = 0
    for trial in range(trials + 10):  # up to 10 more, for trials whose signal came after the run had ended
        if row.trials == trials:
            break
        run_dir = os.path.join(work, f"preempt-{trial}")
        target = rng.randrange(2, int(total * 0.6))
        proc = Proc(run_dir, train_args(run_dir, "--epochs", str(PREEMPT_EPOCHS), size=PREEMPT_SIZE))
        try:
            if not proc.wait_for(proc.has(lambda e, target=target: e["type"] == "step" and e["step"] >= target)):
                row.crashes += 1
                row.fail(f"trial {trial}: ended (exit {proc.proc.returncode}) before step {target}")
                continue
            proc.proc.send_signal(signal.SIGTERM)
            code = proc.wait()
        except Hang:
            row.hangs += 1
            row.fail(f"trial {trial}: did not end within {TRIAL_TIMEOUT:.0f} s of SIGTERM")
            continue
        finally:
            proc.kill()
        row.trials += 1
        events = proc.events()
        ended = [e for e in events if e["type"] == "run_ended"]
        signal_saves = [e for e in events if e["type"] == "checkpoint_saved" and e["reason"] == "signal"]
        if code == 0 and ended and ended[-1]["status"] == "completed" and ended[-1]["step"] == total:
            missed += 1  # the signal came after the last step: the run had finished, as it should
            row.trials -= 1
            continue
        if code != 0 or not ended or ended[-1]["status"] != "preempted" or not signal_saves:
            row.crashes += code != 0
            row.fail(f"trial {trial}: exit {code}, ended {ended[-1:] or 'never'}, signal checkpoint {bool(signal_saves)}")
            continue
        preempted += 1
        good, bad, problem = check_folder(run_dir)
        loadable += not bad
        if bad:
            row.fail(f"trial {trial}: {problem}")
            continue
        resume = Proc(run_dir, ["--resume", run_dir, "--headless"])
        try:
            code = resume.wait()
        except Hang:
            row.hangs += 1
            row.fail(f"trial {trial}: the resume did not end within {TRIAL_TIMEOUT:.0f} s")
            continue
        finally:
            resume.kill()
        if code != 0:
            row.crashes += 1
            row.fail(f"trial {trial}: the resume failed (exit {code}):\n{resume.stderr()[-2000:]}")
            continue
        same = same_state(ckpt.load(os.path.join(run_dir, "checkpoints", "last.pt")), reference)
        exact += same
        if not same:
            row.fail(f"trial {trial}: preempted at step {signal_saves[-1]['step']}, resumed weights differ from the straight run")
        print(f"  SIGTERM trial {row.trials}/{trials}: stopped at step {signal_saves[-1]['step']} of {total}, "
              f"resumed {'exactly' if same else 'INEXACTLY'}", flush=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    row.loadable = f"{loadable}/{row.trials} runs"
    row.exact = f"{exact}/{row.trials}"
    row.bar = f"{row.trials - exact} inexact resumes"
    row.notes.append(f"{preempted}/{row.trials} exited 0 'preempted' with a 'signal' checkpoint")
    if missed:
        row.notes.append(f"{missed} more runs finished before their signal arrived (not counted)")
    return row


# -- two writers ----------------------------------------------------------------------------------

START_LINE = os.path.join(ROOT, "tests", "faults", "start_line_dataset.py")  # releases processes together
WRITER_KINDS = ("two fresh runs released together", "two resumes released together", "--resume of a live run",
                "a fresh run into a live run's folder")


def written_by(run_dir: str, writers: set[int], ended: bool = True) -> str:
    """"" if the folder reads as written by the processes `writers` only (one after another), else the evidence
    of another writer: seq numbers used twice or skipped, a run_started, run.json, lease.json or last.pt of another
    (last.pt against the log's last save once the writer has `ended`: a live one renames it just before logging)."""
    from scorch import checkpoint as ckpt

    events = raw_events(run_dir)  # as written: the reader would refuse a seq out of order, hiding a second writer
    seqs = [e["seq"] for e in events]
    if seqs != list(range(1, len(seqs) + 1)):
        return f"events.jsonl: {len(seqs) - len(set(seqs))} seq numbers used twice, {len(seqs)} lines not 1..{len(seqs)}"
    starters = {e["pid"] for e in events if e["type"] == "run_started"} - writers
    if starters:
        return f"events.jsonl: run_started by pid {sorted(starters)}, not the winner"
    for name in ("run.json", "lease.json"):
        with open(os.path.join(run_dir, name)) as fh:
            pid = json.load(fh).get("pid")
        if pid not in writers:
            return f"{name} names pid {pid}, not the winner"
    saved = [e["epoch"] for e in events if e["type"] == "checkpoint_saved" and e["path"].endswith("/last.pt")]
    if saved != sorted(saved):
        return f"last.pt went back: epochs {saved}"
    last = ckpt.load(os.path.join(run_dir, "checkpoints", "last.pt"))["epoch"]
    if ended and saved and last != saved[-1]:
        return f"last.pt holds epoch {last}, the log's last save epoch {saved[-1]}"
    return ""


def refused_by_name(proc: Proc, holder: int) -> str:
    """"" if `proc` was refused as a second writer (exit 2, one line naming the holder's pid), else what it did."""
    code, err = proc.proc.returncode, proc.stderr()
    # in use now; or (a resume whose checkpoint another wrote before it could take the folder) changed since read
    said = ("is in use by", "already holds a run", "changed since this process read its checkpoint")
    named = any(words in err for words in said) and f"pid {holder} " in err
    if code == 2 and named and err.count("\n") == 1 and "Traceback" not in err:
        return ""
    return f"the second writer: exit {code}, {err.strip()[-600:] or 'nothing said'}"


def race(run_dir: str, args: list[str], go: str) -> list[Proc]:
    """Two scorch-train processes with `args`, held at the start line until both are there, then released."""
    procs = [Proc(run_dir, args, SCORCH_TEST_GO=go) for _ in range(2)]
    deadline = time.monotonic() + TRIAL_TIMEOUT
    while len(glob.glob(go + ".ready.*")) < 2 and all(p.proc.poll() is None for p in procs):
        if time.monotonic() > deadline:
            raise Hang()
        time.sleep(0.01)
    open(go, "w").close()
    for proc in procs:
        proc.wait()
    return procs


def two_writer_drill(work: str, trials: int, rng: random.Random) -> Row:
    """Rounds of four trials, one of each WRITER_KINDS: a race into a new folder, a race of two resumes of the
    folder it left, then a live run that a --resume and a fresh run try to take over. A trial counts as a folder
    written by two processes when `written_by` finds another writer's mark or the second one did not exit 2."""
    row = Row("two writers, one folder")
    race_args = ["--epochs", "4", "--dataset", START_LINE]  # seconds of training: the loser comes while it runs
    two = named = loaded = unloaded = 0
    kinds = dict.fromkeys(WRITER_KINDS, 0)

    def judge(kind: str, run_dir: str, winners: set[int], loser: Proc, holder: int, ended: bool = True) -> None:
        nonlocal two, named, loaded, unloaded
        row.trials += 1
        kinds[kind] += 1
        refusal = refused_by_name(loser, holder)
        named += not refusal
        shared = written_by(run_dir, winners, ended) or ("" if loser.proc.returncode == 2 else refusal)
        two += bool(shared)
        good, bad, problem = check_folder(run_dir)
        loaded, unloaded = loaded + good, unloaded + bad
        if refusal or shared or bad:
            row.fail(f"trial {row.trials} ({kind}): {shared or refusal or problem}")
        print(f"  two-writer trial {row.trials}/{trials} ({kind}): {'TWO WRITERS' if shared else 'one writer'}, "
              f"{'refused naming the holder' if not refusal else 'refusal WRONG'}", flush=True)

    for round_ in range(trials):
        if row.trials >= trials:
            break
        run_dir = os.path.join(work, f"writers-{round_}")
        procs: list[Proc] = []
        try:
            # 1. two fresh runs into one new folder, released within microseconds of each other
            procs = race(run_dir, train_args(run_dir, *race_args, size=5000), os.path.join(work, f"go-{round_}-new"))
            codes = sorted(p.proc.returncode for p in procs)
            if codes != [0, 2]:
                row.crashes += any(c not in (0, 2) for c in codes)
            winner = next((p for p in procs if p.proc.returncode == 0), procs[0])
            loser = procs[1] if winner is procs[0] else procs[0]
            judge(WRITER_KINDS[0], run_dir, {winner.proc.pid}, loser, winner.proc.pid)
            if row.trials >= trials:
                break
            # 2. two resumes of that finished run, released together
            first = winner.proc.pid
            procs = race(run_dir, ["--resume", run_dir, "--headless", "--epochs", "8", "--dataset", START_LINE],
                         os.path.join(work, f"go-{round_}-resume"))
            winner = next((p for p in procs if p.proc.returncode == 0), procs[0])
            loser = procs[1] if winner is procs[0] else procs[0]
            row.crashes += any(p.proc.returncode not in (0, 2) for p in procs)
            judge(WRITER_KINDS[1], run_dir, {first, winner.proc.pid}, loser, winner.proc.pid)
            if row.trials >= trials:
                break
            # 3 and 4. a live run (checkpointing many times a second), a --resume and a fresh run into its folder
            live_dir = os.path.join(work, f"live-{round_}")
            live = Proc(live_dir, train_args(live_dir, "--epochs", "100000", "--max-train-iterations", "5",
                                             size=2000, telemetry=True))
            procs = [live]
            if not live.wait_for(live.has(lambda e: e["type"] == "checkpoint_saved")):
                row.crashes += 1
                row.fail(f"the live run ended (exit {live.proc.returncode}):\n{live.stderr()[-2000:]}")
                break
            before = {name: open(os.path.join(live_dir, name), "rb").read() for name in ("run.json", ".token")}
            for kind, args in ((WRITER_KINDS[2], ["--resume", live_dir, "--headless"]),
                               (WRITER_KINDS[3], train_args(live_dir, "--epochs", "3", size=2000))):
                if row.trials >= trials:
                    break
                time.sleep(rng.uniform(0.0, 1.0))
                intruder = Proc(live_dir, args)
                procs.append(intruder)
                intruder.wait()
                row.crashes += intruder.proc.returncode not in (0, 2)
                after = {name: open(os.path.join(live_dir, name), "rb").read() for name in before}
                if after != before:
                    row.fail(f"{kind}: {[n for n in before if before[n] != after[n]]} of the live run replaced")
                    two += 1
                if live.proc.poll() is not None:
                    row.fail(f"{kind}: the live run ended (exit {live.proc.returncode}) while the intruder came")
                judge(kind, live_dir, {live.proc.pid}, intruder, live.proc.pid, ended=False)
            live.proc.send_signal(signal.SIGTERM)  # the live run ends as a preempted one: its own end, recorded
            if live.wait() != 0:
                row.crashes += 1
                row.fail(f"the live run's SIGTERM: exit {live.proc.returncode}:\n{live.stderr()[-2000:]}")
            shared = written_by(live_dir, {live.proc.pid})
            if shared:
                two += 1
                row.fail(f"after the live run ended: {shared}")
        except Hang:
            row.hangs += 1
            row.fail(f"trial {row.trials + 1}: a process neither progressed nor ended within {TRIAL_TIMEOUT:.0f} s")
        finally:
            for proc in procs:
                proc.kill()
    row.loadable = f"{loaded}/{loaded + unloaded} files"
    row.bar = f"{two} folders written by two processes"
    row.notes += [f"{n} x {kind}" for kind, n in kinds.items()]
    row.notes.append(f"{named}/{row.trials} second writers exited 2 with one line naming the holder's pid")
    return row


# -- damaged checkpoints --------------------------------------------------------------------------

# The two-input example whose Network writes the weights it is handed to load into $SCORCH_DRILL_LOADED
# (torch.save): what a run really loaded, whatever it says it loaded.
PROBE_MODEL = f'''
import os
import sys

import torch

sys.path.insert(0, {os.path.join(ROOT, "examples")!r})
from two_inputs.model import Network as TwoInputs, Socket  # noqa: F401


class Network(TwoInputs):
    def load_state_dict(self, state_dict, *args, **kwargs):
        if os.environ.get("SCORCH_DRILL_LOADED"):
            torch.save(state_dict, os.environ["SCORCH_DRILL_LOADED"])
        return super().load_state_dict(state_dict, *args, **kwargs)
'''
DAMAGES = ("one bit flipped", "a byte of a weight changed", "random bytes written over a run", "a 512-byte sector zeroed")
LOADERS = ("--resume RUN_DIR", "--resume FILE", "-c FILE")


def tensor_offsets(path: str) -> list[tuple[int, int]]:
    """(start, size) in the file of each tensor torch stored in the checkpoint zip."""
    import struct
    import zipfile

    spans = []
    with zipfile.ZipFile(path) as archive, open(path, "rb") as fh:
        for info in archive.infolist():
            if "/data/" in info.filename and info.file_size:
                fh.seek(info.header_offset)
                name_len, extra_len = struct.unpack("<HH", fh.read(30)[26:30])
                spans.append((info.header_offset + 30 + name_len + extra_len, info.file_size))
    return spans


def damage(path: str, how: str, rng: random.Random) -> str:
    """Change bytes of `path` in place (its inode: every hard link to it too), as a disk, a copy or memory would;
    the modification time is put back, as bit rot leaves it. Returns where."""
    size = os.path.getsize(path)
    stat = os.stat(path)
    with open(path, "r+b") as fh:
        if how == "a byte of a weight changed":
            start, length = rng.choice(tensor_offsets(path))
            offset, new = start + rng.randrange(length), None
        elif how == "a 512-byte sector zeroed":
            offset = rng.randrange(0, max(1, size // 512)) * 512
            fh.seek(offset)
            old = fh.read(512)
            if old.count(0) == len(old):  # already zeros there: another sector
                return damage(path, how, rng)
            fh.seek(offset)
            fh.write(bytes(len(old)))
            new = b""
        elif how == "random bytes written over a run":
            offset = rng.randrange(size)
            fh.seek(offset)
            old = fh.read(rng.randint(2, 64))
            fresh = rng.randbytes(len(old))
            while fresh == old:
                fresh = rng.randbytes(len(old))
            fh.seek(offset)
            fh.write(fresh)
            new = b""
        else:
            offset, new = rng.randrange(size), None
        if new is None:  # one byte: a bit flipped, or (inside a weight) any other value
            fh.seek(offset)
            byte = fh.read(1)[0]
            value = byte ^ (1 << rng.randrange(8)) if how == "one bit flipped" else rng.choice([b for b in range(256) if b != byte])
            fh.seek(offset)
            fh.write(bytes([value]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return f"{how} at byte {offset} of {size}"


def pristine_run(work: str) -> tuple[str, dict[str, bytes], dict[str, dict]]:
    """A finished run (5 epochs, last.pt, prev.pt, best.pt, 2 kept epoch-K.pt, each with its digest), and every
    checkpoint's bytes and contents, read once through scorch's digest check."""
    from scorch import checkpoint as ckpt

    model = os.path.join(work, "probe_model.py")
    with open(model, "w") as fh:
        fh.write(PROBE_MODEL)
    run_dir = os.path.join(work, "pristine")
    proc = Proc(run_dir, train_args(run_dir, "--epochs", "5", "--keep", "2", size=1000, model=model))
    try:
        if proc.wait() != 0:
            raise RuntimeError(f"the run to damage failed (exit {proc.proc.returncode}):\n{proc.stderr()[-2000:]}")
    finally:
        proc.kill()
    folder = os.path.join(run_dir, "checkpoints")
    names = sorted(n for n in os.listdir(folder) if n.endswith(".pt"))
    return run_dir, {n: open(os.path.join(folder, n), "rb").read() for n in names}, \
        {n: ckpt.load(os.path.join(folder, n)) for n in names}


def corruption_drill(work: str, trials: int, rng: random.Random) -> Row:
    """Each trial: a copy of one finished run folder (hard links kept), one, two or every checkpoint damaged
    (DAMAGES), then a real scorch-train loads it (LOADERS). A damaged checkpoint counts as loaded when the
    run says it resumed from one, or when the weights the model was handed (PROBE_MODEL) are not exactly those
    of an intact file; --resume RUN_DIR must take the newest intact one, and the rest refuse by name (exit 2)."""
    import torch

    from scorch import checkpoint as ckpt
    from scorch.errors import ScorchError

    row = Row("damaged checkpoints")
    try:
        pristine, original, contents = pristine_run(work)
    except RuntimeError as exc:
        row.crashes += 1
        row.fail(str(exc))
        return row
    damaged_loaded = fell_back = refused = in_process = files_damaged = 0
    how_counts = dict.fromkeys(DAMAGES, 0)
    for trial in range(trials):
        run_dir = os.path.join(work, f"damaged-{trial}")
        subprocess.run(["cp", "-a", pristine, run_dir], check=True)  # -a: best.pt/epoch-K.pt stay links to last.pt
        folder = os.path.join(run_dir, "checkpoints")
        names = sorted(original)
        count = rng.choice([1] * 6 + [2] * 3 + [len(names)])
        victims = rng.sample(names, count)
        where = []
        for name in victims:
            how = rng.choice(DAMAGES)
            how_counts[how] += 1
            where.append(f"{name}: {damage(os.path.join(folder, name), how, rng)}")
        intact = {n for n in names if open(os.path.join(folder, n), "rb").read() == original[n]}
        for name in set(names) - intact:  # every damaged file (links included) is refused by the loader itself
            files_damaged += 1
            try:
                ckpt.load(os.path.join(folder, name))
                in_process += 1
                row.fail(f"trial {trial}: ckpt.load accepted damaged {name} ({'; '.join(where)})")
            except ScorchError:
                pass
        loader = LOADERS[trial % len(LOADERS)]
        target = os.path.join(folder, rng.choice(sorted(set(names) - intact)))
        if loader == "--resume RUN_DIR":
            args = ["--resume", run_dir, "--headless", "--epochs", "6"]
            newest = max(((contents[n]["epoch"], contents[n]["step"]) for n in intact), default=None)
            expected = {n for n in intact if (contents[n]["epoch"], contents[n]["step"]) == newest} or None
        elif loader == "--resume FILE":
            args, expected = ["--resume", target, "--headless", "--epochs", "6"], None
        else:
            args = train_args(os.path.join(run_dir, "from-c"), "--epochs", "1", "-c", target, size=1000,
                              model=os.path.join(work, "probe_model.py"))
            expected = None
        probe = os.path.join(run_dir, "loaded-weights.pt")
        proc = Proc(run_dir, args, SCORCH_DRILL_LOADED=probe)
        try:
            code = proc.wait()
        except Hang:
            row.hangs += 1
            row.fail(f"trial {trial}: {loader} did not end within {TRIAL_TIMEOUT:.0f} s")
            continue
        finally:
            proc.kill()
        row.trials += 1
        err = proc.stderr()
        started = [e for e in proc.events() if e["type"] == "run_started" and e["pid"] == proc.proc.pid]
        resumed_from = started[-1]["resumed_from"] if started else None
        weights = torch.load(probe, weights_only=False) if os.path.exists(probe) else None
        matches = [n for n in names if weights is not None and equal(dict(weights), dict(contents[n]["model_state"]))]
        bad = (resumed_from is not None and os.path.basename(resumed_from) not in intact) or \
            (weights is not None and not (set(matches) & intact))
        damaged_loaded += bad
        if expected is not None:
            took = os.path.basename(resumed_from or "")
            ok = code == 0 and took in expected and took in matches  # the newest intact file, and its very weights
            fell_back += ok
            outcome = f"resumed from {took}" if ok else "WRONG"
        else:
            named = [n for n in set(names) - intact if os.path.join(folder, n) in err]
            ok = code == 2 and weights is None and "is damaged" in err and "Traceback" not in err and bool(
                named if loader == "--resume RUN_DIR" else target in err)
            refused += ok
            outcome = "refused by name" if ok else "WRONG"
        if bad or not ok:
            row.crashes += code not in (0, 2)
            row.fail(f"trial {trial} ({loader}; {'; '.join(where)}): exit {code}, resumed from {resumed_from}, "
                     f"weights equal to {matches or 'no intact file'}:\n{err[-1500:]}")
        print(f"  damage trial {row.trials}/{trials} ({loader}; {len(victims)} of {len(names)} files damaged, "
              f"{len(intact)} intact): {outcome}", flush=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    row.loadable = f"{files_damaged}/{files_damaged} damaged files refused" if not in_process else \
        f"{files_damaged - in_process}/{files_damaged} damaged files refused"
    row.exact = f"{fell_back} fell back, {refused} refused"
    row.bar = f"{damaged_loaded + in_process} damaged checkpoints loaded"
    row.notes += [f"{n} x {how}" for how, n in how_counts.items()]
    row.notes.append(f"loaders: {', '.join(LOADERS)} in turn; {fell_back} --resume RUN_DIR took the newest intact file, "
                     f"{refused} refused naming the damaged file(s) with exit 2")
    return row


# -- replayed and forged commands -----------------------------------------------------------------

class Sniffer:
    """An eavesdropper on the loopback interface (a raw AF_PACKET socket: root): the TCP payload that clients
    send to `port`, one byte stream per connection, as it crossed the wire."""

    def __init__(self, port: int) -> None:
        import socket
        import threading

        self.port = port
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 2**20)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.05)
        self.segments: dict[int, dict[int, bytes]] = {}  # client port -> TCP seq -> payload
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import socket
        import struct

        while not self._stop.is_set():
            try:
                frame, address = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            if address[2] == socket.PACKET_OUTGOING or frame[12:14] != b"\x08\x00":  # each packet once; IPv4 only
                continue
            ip = frame[14:]
            if ip[9] != 6:  # TCP
                continue
            header, total = (ip[0] & 0x0F) * 4, struct.unpack(">H", ip[2:4])[0]
            tcp = ip[header:total]
            source, destination, seq = struct.unpack(">HHI", tcp[:8])
            payload = tcp[(tcp[12] >> 4) * 4:]
            if destination == self.port and payload:
                self.segments.setdefault(source, {})[seq] = payload

    def streams(self) -> list[bytes]:
        """Each client connection's bytes, in TCP order (a retransmission counted once)."""
        self._stop.set()
        self._thread.join()
        self.sock.close()
        return [b"".join(part for _, part in sorted(segs.items())) for segs in self.segments.values()]


def zmtp_messages(data: bytes) -> tuple[list[list[bytes]], int]:
    """The messages (lists of frames) in one direction of a ZMTP 3 connection after its 64-byte greeting, and
    where the first of them starts (the handshake is what comes before): commands (READY) and an incomplete tail
    are passed over."""
    import struct

    messages, frames, at, first = [], [], 64, len(data)
    while at + 2 <= len(data):
        flags = data[at]
        if flags & 0x02:  # a long frame: 8-byte size
            if at + 9 > len(data):
                break
            size, start = struct.unpack(">Q", data[at + 1:at + 9])[0], at + 9
        else:
            size, start = data[at + 1], at + 2
        if start + size > len(data):
            break
        if not flags & 0x04:  # not a command
            first = min(first, at)
            frames.append(data[start:start + size])
            if not flags & 0x01:  # the last frame of a message
                messages.append(frames)
                frames = []
        at = start + size
    return messages, first


def zmtp_frame(body: bytes) -> bytes:
    """One final message frame, as ZMTP 3 puts it on the wire."""
    import struct

    return (bytes([0x00, len(body)]) if len(body) < 256 else b"\x02" + struct.pack(">Q", len(body))) + body


def send_raw(host: str, port: int, stream: bytes, timeout: float = 30.0) -> dict:
    """`stream` (a client's bytes as they crossed the wire) sent on a new TCP connection; the run's first reply."""
    import socket

    with socket.create_connection((host, port), timeout=timeout) as sock:
        # In the steps of the ZMTP handshake, as the client did: the greeting's signature, then the rest of the
        # greeting, each once the server has answered its part; then READY and the message. (libzmq drops a peer
        # whose bytes run ahead of its own greeting.)
        data = b""
        for start, end in ((0, 10), (10, 64)):
            sock.sendall(stream[start:end])
            try:
                while len(data) < end:  # the server's greeting is as long as ours
                    chunk = sock.recv(65536)
                    if not chunk:
                        return {"status": "closed"}
                    data += chunk
            except TimeoutError:
                return {"status": "no answer"}
        sock.sendall(stream[64:])
        while True:
            messages, _ = zmtp_messages(data) if len(data) >= 64 else ([], 0)
            if messages:
                return json.loads(messages[0][-1])
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return {"status": "no answer"}
            if not chunk:
                return {"status": "closed"}
            data += chunk


def capture(port: int, command: list[str]) -> tuple[bytes, dict, subprocess.CompletedProcess]:
    """Run `command` (a scorch-ctl) while eavesdropping on `port`: the client's whole byte stream as captured,
    the signed request in it, and how the command ended."""
    sniffer = Sniffer(port)
    try:
        done = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=120)
    finally:
        streams = sniffer.streams()
    for stream in streams:
        for message in zmtp_messages(stream)[0]:
            try:
                request = json.loads(message[-1])
            except ValueError:
                continue
            if isinstance(request, dict) and request.get("op") == "command":
                return stream, request, done
    raise RuntimeError(f"no command captured on port {port} ({len(streams)} connections): {done.stderr.strip()}")


def reply_key(reply: dict) -> str:
    reason = str(reply.get("reason") or "")
    return f"{reply.get('status')}{': ' + reason.split(':')[0].split(' (')[0] if reason else ''}"


def replay_drill(work: str, replays: int, rng: random.Random) -> Row:
    """A live run with telemetry. `scorch-ctl checkpoint` is captured off the loopback wire (Sniffer) and its exact
    bytes, the ZMTP handshake and all, are sent again `replays` times on new connections, then once more after the
    time window; forgeries built from it (another key, a changed body, a moved time, the token in clear, no mac)
    go in the same way. Then a captured `scorch-ctl stop` ends the run, which is resumed, and both captured
    commands are replayed to the new process. A command applied twice: an id with two `applied` events, or an
    accepted reply to anything but the one real command."""

    from scorch.telemetry.auth import WINDOW_SECONDS, sign
    from scorch.telemetry.client import read_token
    from scorch.telemetry.protocol import CommandRequest

    row = Row("replayed and forged commands")
    run_dir = os.path.join(work, "replay")
    args = train_args(run_dir, "--epochs", "100000", size=40_000, telemetry=True)
    proc = Proc(run_dir, args)
    replies: dict[str, int] = {}
    taken = 0
    ctl = [sys.executable, "-m", "scorch.ctl", run_dir]

    def send(host: str, port: int, stream: bytes, what: str) -> None:
        nonlocal taken
        reply = send_raw(host, port, stream)
        key = f"{what}: {reply_key(reply)}"
        replies[key] = replies.get(key, 0) + 1
        if reply.get("status") != "refused":
            taken += reply.get("status") == "accepted"
            row.fail(f"{what}: answered {reply}")

    try:
        if not proc.wait_for(proc.has(lambda e: e["type"] == "step")):
            row.crashes += 1
            row.fail(f"the live run ended before training:\n{proc.stderr()[-2000:]}")
            return row
        endpoint = json.load(open(os.path.join(run_dir, "run.json")))["telemetry"]["control"]
        host, port = endpoint.rsplit("/", 1)[1].rsplit(":", 1)[0], int(endpoint.rsplit(":", 1)[1])
        token = read_token(run_dir) or ""
        stream, request, done = capture(port, [*ctl, "checkpoint"])
        if done.returncode != 0:
            row.fail(f"scorch-ctl checkpoint: exit {done.returncode}: {done.stderr.strip()}")
        if token.encode() in stream:
            row.fail("the token crossed the wire in clear")
        proc.wait_for(proc.has(lambda e: e["type"] == "command" and e["id"] == request["id"] and e["status"] == "applied"))
        for _ in range(replays):  # the exact bytes, at once and as fast as the run answers
            send(host, port, stream, "replayed")
        late = 0
        while time.time() < request["time"] + WINDOW_SECONDS + 2 or late < 10:  # and after the window, stale
            if time.time() >= request["time"] + WINDOW_SECONDS + 2:
                send(host, port, stream, "replayed")
                late += 1
            else:
                time.sleep(0.5)
        row.trials += replays + late
        handshake = stream[:zmtp_messages(stream)[1]]  # greeting and READY, as captured: forgeries follow them
        forgeries = {
            "another key": sign(CommandRequest(command="stop"), rng.randbytes(16).hex()),
            "a changed body": dict(request, command="stop"),
            "a changed id": dict(request, id=rng.randbytes(16).hex()),
            "a moved time": dict(request, time=time.time()),
            "the token in clear": CommandRequest(command="stop", token=token),
            "no mac": dict(request, mac=None, id=rng.randbytes(16).hex()),
            "signed long ago": sign(CommandRequest(command="stop"), token, now=time.time() - 3600),
            "signed ahead": sign(CommandRequest(command="stop"), token, now=time.time() + 3600),
        }
        for what, forged in forgeries.items():
            body = json.dumps(forged).encode() if isinstance(forged, dict) else forged.encode()
            for _ in range(20):
                send(host, port, handshake + zmtp_frame(body), f"forged ({what})")
                row.trials += 1
        # A captured stop ends this process; replayed to its resumed successor (a new token), it is refused too.
        stop_stream, stop_request, done = capture(port, [*ctl, "stop"])
        if done.returncode != 0 or proc.wait() != 0:
            row.fail(f"scorch-ctl stop: exit {done.returncode} ({done.stderr.strip()}), the run exit {proc.proc.returncode}")
        resumed = Proc(run_dir, ["--resume", run_dir, "--headless"])
        proc = resumed
        begun = resumed.wait_for(resumed.has(lambda e: e["type"] == "run_started" and e["pid"] == resumed.proc.pid))
        if not begun or not resumed.wait_for(resumed.has(lambda e: e["type"] == "step" and e["seq"] > begun[-1]["seq"])):
            row.crashes += 1
            row.fail(f"the resumed run ended before training:\n{resumed.stderr()[-2000:]}")
            return row
        endpoint = json.load(open(os.path.join(run_dir, "run.json")))["telemetry"]["control"]
        port = int(endpoint.rsplit(":", 1)[1])
        for _ in range(20):
            send(host, port, stop_stream, "replayed to the resumed run")
            send(host, port, stream, "replayed to the resumed run")
            row.trials += 2
        done = subprocess.run([*ctl, "stop"], env=env(), capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or resumed.wait() != 0:
            row.fail(f"the resumed run's own stop: exit {done.returncode} ({done.stderr.strip()}), "
                     f"the run exit {resumed.proc.returncode}")
        events = resumed.events()
        applied: dict[str, int] = {}
        for e in events:
            if e["type"] == "command" and e["status"] == "applied":
                applied[e["id"]] = applied.get(e["id"], 0) + 1
        twice = sum(n > 1 for n in applied.values()) + taken
        saves = [e for e in events if e["type"] == "checkpoint_saved" and e["reason"] == "request"]
        if twice or len(saves) != 3 or len(applied) != 3:  # a stop saves last.pt too
            row.fail(f"commands applied: {applied}, {len(saves)} requested checkpoints saved, {taken} accepted replies")
        row.bar = f"{twice} commands applied twice"
        row.notes.append("; ".join(f"{n} {key}" for key, n in sorted(replies.items())))
        row.notes.append(f"3 real commands (checkpoint, stop, the resumed run's stop) applied once each; "
                         f"{len(saves)} checkpoints saved on request")
    except Hang:
        row.hangs += 1
        row.fail("the live run did not start or end in time")
    except RuntimeError as exc:
        row.fail(str(exc))
    except PermissionError:
        row.fail("the eavesdropper needs root (a raw AF_PACKET socket on the loopback interface): run the drill as root")
    finally:
        proc.kill()
    return row


# -- fuzz -----------------------------------------------------------------------------------------

def steps_per_second(events: list[dict], start: float, end: float) -> float:
    steps = [e for e in events if e["type"] == "step" and start <= e["time"] <= end]
    if len(steps) < 2 or steps[-1]["time"] <= steps[0]["time"]:
        return float("nan")
    return (steps[-1]["step"] - steps[0]["step"]) / (steps[-1]["time"] - steps[0]["time"])


def flood(target: str, seconds: float, seed: int, minimum: int = 0) -> dict:
    """Run the flooder for `seconds` (longer until `minimum` messages are out)."""
    total: dict = {"sent": 0, "kinds": {}, "answered": 0}
    while True:
        out = subprocess.run([sys.executable, HOSTILE, "flood", target, str(seconds), str(seed)], env=env(),
                             capture_output=True, text=True, timeout=seconds + 120)
        if out.returncode != 0:
            raise RuntimeError(f"the flooder failed: {out.stderr[-2000:]}")
        got = json.loads(out.stdout)
        total["sent"] += got["sent"]
        total["answered"] += got["answered"]
        for k, v in got["kinds"].items():
            total["kinds"][k] = total["kinds"].get(k, 0) + v
        if total["sent"] >= minimum:
            return total
        seed += 1


def live_run(work: str, name: str) -> Proc:
    """A long run with telemetry, in WORK/NAME, for a client (or a flooder) to talk to."""
    run_dir = os.path.join(work, name)
    return Proc(run_dir, train_args(run_dir, "--epochs", "100000", size=40_000, telemetry=True))


def training(proc: Proc, row: Row) -> bool:
    """Wait for the live run's first step; False (a crash, in `row`) if it ended before training."""
    if proc.wait_for(proc.has(lambda e: e["type"] == "step")):
        return True
    row.crashes += 1
    row.fail(f"the live run ended before training:\n{proc.stderr()[-2000:]}")
    return False


def fuzz_drill(work: str, messages: int, window: float, seed: int) -> Row:
    import psutil

    from scorch.telemetry.client import ClientError, RunClient

    row = Row("fuzzed control messages")
    proc = live_run(work, "fuzz")
    run_dir = proc.run_dir
    try:
        if not training(proc, row):
            return row
        info = json.load(open(os.path.join(run_dir, "run.json")))
        control = info["telemetry"]["control"]
        rss = psutil.Process(proc.proc.pid)
        time.sleep(1.0)
        quiet_start = time.time()
        time.sleep(window)
        quiet = (quiet_start, time.time())
        rss_before = rss.memory_info().rss
        elsewhere_start = time.time()
        flood("tcp://127.0.0.1:9", window, seed)  # nothing listens there: only the flooder's own cost
        elsewhere = (elsewhere_start, time.time())
        fuzz_start = time.time()
        sent = flood(control, window, seed, minimum=messages)
        fuzz = (fuzz_start, time.time())
        rss_after = rss.memory_info().rss
        row.trials = sent["sent"]
        # After the flood: the process lives, a valid client is answered, a valid stop is obeyed.
        if proc.proc.poll() is not None:
            row.crashes += 1
            row.fail(f"the run died under the flood (exit {proc.proc.returncode}):\n{proc.stderr()[-2000:]}")
            return row
        client = RunClient.from_run_dir(run_dir, timeout=30)
        try:
            client.hello()
        except ClientError as exc:
            row.hangs += 1
            row.fail(f"no answer to a valid hello after the flood: {exc.message}")
        finally:
            client.close()
        stop = subprocess.run([sys.executable, "-m", "scorch.ctl", run_dir, "stop", "--timeout", "30"], env=env(),
                              capture_output=True, text=True, timeout=120)
        if stop.returncode != 0:
            row.fail(f"scorch-ctl stop after the flood: exit {stop.returncode}: {stop.stderr.strip()}")
        try:
            code = proc.wait()
        except Hang:
            row.hangs += 1
            row.fail("the run did not stop after the flood")
            code = None
        events = proc.events()
        if code != 0:
            row.crashes += code is not None
            row.fail(f"the run ended with exit {code} after the flood:\n{proc.stderr()[-2000:]}")
        accepted = [e for e in events if e["type"] == "command" and e["status"] == "accepted"]
        row.bar = f"{len(accepted) - 1} hostile messages taken as commands"
        if [e["command"] for e in accepted] != ["stop"]:  # scorch-ctl's, and nothing else
            row.fail(f"hostile messages were taken as commands: {accepted}")
        refused = sum(1 for e in events if e["type"] == "command" and e["status"] == "refused")
        counted = sum(int(e["message"].split("telemetry: ")[1].split()[0]) for e in events
                      if e["type"] == "log" and "more commands were refused" in e["message"])
        speeds = [steps_per_second(events, *w) for w in (quiet, elsewhere, fuzz)]
        row.notes += [f"steps/s: {speeds[0]:.0f} quiet, {speeds[1]:.0f} with the flooder aimed at a closed port, "
                      f"{speeds[2]:.0f} with it aimed at the run ({speeds[2] / speeds[1]:.0%} of the closed-port speed, "
                      f"{speeds[2] / speeds[0]:.0%} of quiet)",
                      f"{sent['sent'] / (fuzz[1] - fuzz[0]):.0f} messages/s for {fuzz[1] - fuzz[0]:.0f} s; of "
                      f"{sent['kinds'].get('wrong_token', 0) + sent['kinds'].get('no_token', 0)} bad-token commands "
                      f"{refused} were logged one by one and {counted} counted in summaries (the rest were never read)",
                      f"trainer RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB over the flood"]
    except Hang:
        row.hangs += 1
        row.fail("the live run did not start training")
    finally:
        proc.kill()
    return row


# -- flood memory -----------------------------------------------------------------------------------

FLOODS = (("50,000 hostile messages", ["flood", "{control}", "600", "{seed}", "0", "50000"]),
          ("500 subscribers churning x4", ["subscribers", "{publish}", "500", "4"]),
          ("hello storm 200x50", ["hellos", "{control}", "200", "50"]))
FLOOD_SLACK_MIB = 10.0  # the bar: RSS back within this of its level before each flood
FLOOD_SETTLE_SECONDS = 300.0  # how long the backlog may take to be answered (a tenth of a thread's time)


def _peak(rss: Any, done: Any, peak: list[float]) -> None:
    """Until `done` is set: the highest `rss()` in peak[0]."""
    while not done.wait(0.2):
        peak[0] = max(peak[0], rss())


def flood_drill(work: str, seed: int) -> Row:
    """One live run, three floods one after another (tests/faults/hostile.py, as in test_flood_memory.py);
    the trainer's RSS before each, its peak while the flood lasts, and once it has come back (or not)."""
    import threading

    import psutil

    row = Row("flood memory (RSS MiB)")
    proc = live_run(work, "flood")
    run_dir = proc.run_dir
    try:
        if not training(proc, row):
            return row
        telemetry = json.load(open(os.path.join(run_dir, "run.json")))["telemetry"]
        rss = lambda: psutil.Process(proc.proc.pid).memory_info().rss / 2**20  # noqa: E731
        time.sleep(3.0)
        not_back = 0
        for name, args in FLOODS:
            before, peak, done = rss(), [0.0], threading.Event()
            sampler = threading.Thread(target=_peak, args=(rss, done, peak), daemon=True)
            sampler.start()
            out = subprocess.run([sys.executable, HOSTILE, *[a.format(seed=seed, **telemetry) for a in args]],
                                 env=env(), capture_output=True, text=True, timeout=900)
            done.set()
            sampler.join()
            if out.returncode != 0:
                row.fail(f"{name}: the flooder failed: {out.stderr[-1000:]}")
                continue
            row.trials += 1
            deadline, after = time.monotonic() + FLOOD_SETTLE_SECONDS, rss()
            started = time.monotonic()
            while after > before + FLOOD_SLACK_MIB and time.monotonic() < deadline and proc.proc.poll() is None:
                time.sleep(1.0)
                after = rss()
            row.notes.append(f"{name}: {before:.0f} before, {max(peak[0], after):.0f} peak during, {after:.0f} after "
                             f"({after - before:+.1f}, back in {time.monotonic() - started:.0f} s)")
            if after > before + FLOOD_SLACK_MIB:
                not_back += 1
                row.fail(f"{name}: RSS {before:.0f} -> {after:.0f} MiB, not back within {FLOOD_SLACK_MIB:g} MiB "
                         f"after {FLOOD_SETTLE_SECONDS:.0f} s")
        row.bar = f"{not_back} floods not back within {FLOOD_SLACK_MIB:g} MiB"
        stop = subprocess.run([sys.executable, "-m", "scorch.ctl", run_dir, "stop", "--timeout", "30"], env=env(),
                              capture_output=True, text=True, timeout=120)
        if stop.returncode != 0:
            row.fail(f"scorch-ctl stop after the floods: exit {stop.returncode}: {stop.stderr.strip()}")
        code = proc.wait()
        if code != 0:
            row.crashes += 1
            row.fail(f"the run ended with exit {code} after the floods:\n{proc.stderr()[-2000:]}")
    except Hang:
        row.hangs += 1
        row.fail("the flooded run did not start or did not stop")
    finally:
        proc.kill()
    return row


# -- the table ------------------------------------------------------------------------------------

def table(rows: list[Row]) -> str:
    head = ["drill", "trials", "loadable checkpoints", "exact resumes", "the bar (must be 0)", "hangs", "crashes"]
    body = [[r.drill, str(r.trials), r.loadable, r.exact, r.bar, str(r.hangs), str(r.crashes)] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body), ""]
    for r in rows:
        out += [f"- {r.drill}: " + "; ".join(r.notes)] if r.notes else []
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=50, help="kill -9 trials (default: %(default)s)")
    parser.add_argument("--preempts", type=int, default=20, help="SIGTERM trials (default: %(default)s)")
    parser.add_argument("--two-writers", type=int, default=20, help="two-writer trials (default: %(default)s)")
    parser.add_argument("--corruptions", type=int, default=50, help="damaged-checkpoint trials (default: %(default)s)")
    parser.add_argument("--replays", type=int, default=1000, help="replays of a captured command (default: %(default)s)")
    parser.add_argument("--fuzz", type=int, default=10_000, help="hostile control messages, at least (default: %(default)s)")
    parser.add_argument("--no-flood", dest="flood", action="store_false", help="skip the flood memory row")
    parser.add_argument("--window", type=float, default=5.0, help="seconds each training speed is measured over")
    parser.add_argument("--quick", action="store_true",
                        help="4 kills, 3 SIGTERMs, 4 two-writer, 6 damaged, 100 replays, 2,000 messages: a smoke run")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random instants (default: random, printed)")
    parser.add_argument("--workdir", default="", help="where the run folders go (default: a temporary folder, removed)")
    args = parser.parse_args()
    if args.quick:
        args.kills, args.preempts, args.fuzz, args.window = 4, 3, 2000, 3.0
        args.two_writers, args.corruptions, args.replays = 4, 6, 100
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    rng = random.Random(seed)
    work = args.workdir or tempfile.mkdtemp(prefix="scorch-drill-")
    os.makedirs(work, exist_ok=True)
    command = " ".join([os.path.relpath(sys.argv[0], ROOT) if sys.argv[0].startswith(ROOT) else sys.argv[0], *sys.argv[1:]])
    print(f"fault drill: python {command} (seed {seed}, run folders in {work})", flush=True)
    started = time.monotonic()
    rows = []
    try:
        if args.kills:
            rows.append(kill_drill(work, args.kills, rng))
        if args.preempts:
            rows.append(preempt_drill(work, args.preempts, rng))
        if args.two_writers:
            rows.append(two_writer_drill(work, args.two_writers, rng))
        if args.corruptions:
            rows.append(corruption_drill(work, args.corruptions, rng))
        if args.replays:
            rows.append(replay_drill(work, args.replays, rng))
        if args.fuzz:
            rows.append(fuzz_drill(work, args.fuzz, args.window, seed))
        if args.flood:
            rows.append(flood_drill(work, seed))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(rows))
    failures = sum(len(r.failures) for r in rows)
    print(f"\n{failures} failures; seed {seed}; {time.monotonic() - started:.0f} s on {os.cpu_count()} CPUs")
    return 0 if failures == 0 and all(r.hangs == 0 and r.crashes == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
