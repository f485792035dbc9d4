"""SVG snapshots of the dashboard at 80x24 and 120x40 (pytest-textual-snapshot).

Every input is fixed (events, their times, the app's clock), so the pictures
are the same on every machine. After a deliberate change to the looks, review
and refresh them with `pytest tests/tui/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from helpers.tui import ScriptedRun, ScriptedSource, settle
from scorch_tui.app import ScorchApp
from scorch_tui.runs import RunEntry
from scorch_tui.sources import ConnectionChanged, HeartbeatSeen

from scorch.telemetry.protocol import Command

LIVE = ConnectionChanged("live", "tcp://127.0.0.1:5556")


def live_run(commands_off: str = "") -> tuple[ScorchApp, ScriptedSource]:
    """A 4-rank run in its fifth epoch, a warning logged, rank 2 lagging."""
    run = ScriptedRun()
    source = ScriptedSource(commands_off=commands_off)
    source.feed(LIVE, *run.through(4, 37), *run.log("loss spiked at step 250 (lr 0.01)"))
    return ScorchApp(source, clock=run.clock), source


def test_live_run_at_80x24(snap_compare):
    app, _ = live_run()
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)


def test_live_run_at_120x40(snap_compare):
    app, _ = live_run()
    assert snap_compare(app, terminal_size=(120, 40), run_before=settle)


def test_read_only_and_reconnecting_at_80x24(snap_compare):
    app, source = live_run(commands_off="read-only: no token (cannot read /runs/r/.token; pass --token-file)")
    source.connection("reconnecting", "no answer from the run at tcp://127.0.0.1:5556 within 2 s")
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)


def test_stalled_at_80x24(snap_compare):
    """Rank 0 has waited 14 s for another rank: STALLED with the age and the phase, no speed, no ETA."""
    app, source = live_run()
    source.feed(HeartbeatSeen(14.0, "waiting for other ranks", app.clock()))
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)


def paused_and_steered() -> ScorchApp:
    """Paused by a person, its lr halved, early stopping off and a checkpoint every 10 minutes."""
    run = ScriptedRun()
    source = ScriptedSource()
    source.feed(LIVE, *run.through(4, 37))
    app = ScorchApp(source, clock=run.clock)
    steered = {"paused": True, "lr_scale": 0.5, "patience": 0, "checkpoint_every": 600.0}
    source.feed(run.stamp(Command(id="p1", command="pause", status="applied", reason="at epoch 5, step 437: paused",
                                  by="ann@laptop (scorch-tui)", steering=steered), dt=1.0),
                HeartbeatSeen(0.4, "paused", app.clock()))
    return app


def test_paused_at_80x24(snap_compare):
    """PAUSED in the header with the steering beside it (lr x0.5 · patience off · ckpt every 10 min), no speed, no
    ETA, and the control bar offers resume."""
    assert snap_compare(paused_and_steered(), terminal_size=(80, 24), run_before=settle)


def test_paused_at_120x40(snap_compare):
    assert snap_compare(paused_and_steered(), terminal_size=(120, 40), run_before=settle)


def test_dead_at_80x24(snap_compare):
    """The run's process is gone: DEAD with the reason, the clock stopped, commands off."""
    app, source = live_run()
    source.connection("dead", "process 4242 is gone (killed or crashed)")
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)


def test_log_scale_chart_at_120x40(snap_compare):
    """A loss over decades with a spike: drawn on a log axis by itself, labelled at round ticks, beside the
    accuracy on a linear one; the two charts fill the width; the ranks panel has its sparklines."""
    run = ScriptedRun(few_metrics=True)
    source = ScriptedSource()
    source.feed(LIVE, *run.through(9, 60))
    app = ScorchApp(source, clock=run.clock)
    assert snap_compare(app, terminal_size=(120, 40), run_before=settle)


def test_stop_asks_first_at_80x24(snap_compare):
    app, _ = live_run()

    async def press_s(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        await pilot.press("s")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=press_s)


def test_finished_run_at_80x24(snap_compare):
    run = ScriptedRun(epochs=6)
    source = ScriptedSource()
    events = run.through(6)
    source.feed(ConnectionChanged("replay", "/runs/r/events.jsonl"), *events, *run.ended("early_stopped",
                "main did not improve by more than 0.0 for 3 epochs (best 0.70 at epoch 5)"))
    app = ScorchApp(source, clock=run.clock)
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)


def test_run_picker_at_80x24(snap_compare):
    now = 1_704_200_000.0  # the picker's clock: ages and durations are counted to it
    entries = [
        RunEntry("/runs/b", "20240102-093000-resnet", "running", "live", 5, 10, "main 0.62 @4", now - 2400,
                 hosts=("gpu-a", "gpu-b")),
        RunEntry("/runs/a", "20240101-120000-resnet", "early_stopped", "finished", 6, 10, "main 0.7 @5", now - 86400,
                 ended=now - 86400 + 3700, hosts=("gpu-a",)),
        RunEntry("/runs/c", "20231231-180000-mlp", "failed", "finished", 1, 30, "", now - 2 * 86400,
                 ended=now - 2 * 86400 + 95, hosts=("node7",)),
        RunEntry("/runs/d", "20231230-080000-mlp", "running", "dead", 3, 30, "main 0.31 @3", now - 3 * 86400,
                 "process 4242 is gone (killed or crashed)", ended=now - 3 * 86400 + 1800, hosts=("gpu-b",)),
    ]
    app = ScorchApp(runs_folder="runs", lister=lambda folder: entries, refresh_list=False, clock=lambda: now)
    assert snap_compare(app, terminal_size=(80, 24))
