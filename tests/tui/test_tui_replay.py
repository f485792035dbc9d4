"""A finished run folder, replayed: the dashboard shows where the run ended up."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from scorch_tui.app import ScorchApp
from scorch_tui.sources import ReplaySource

from scorch.events_log import read_events
from scorch.telemetry.protocol import EpochEnd, RunEnded


async def wait_until(pilot, predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the dashboard did not get there in time"
        await asyncio.sleep(0.05)
    pilot.app.run_screen.redraw(force=True)
    await pilot.pause()


async def test_replay_of_a_finished_run_shows_its_final_state(finished_run: Path):
    # GIVEN the events a real 2-epoch run wrote
    events = read_events(str(finished_run / "events.jsonl"))
    last_epoch = [e for e in events if isinstance(e, EpochEnd)][-1]
    ended = [e for e in events if isinstance(e, RunEnded)][-1]
    app = ScorchApp(ReplaySource(str(finished_run)))
    async with app.run_test(size=(80, 24)) as pilot:
        # WHEN the dashboard replays its folder
        await wait_until(pilot, lambda: app.run_screen.model.last_time == events[-1].time)
        text = app.export_text()
        # THEN it shows a replay of a completed run, at its last epoch and step
        assert "REPLAY" in text and "COMPLETED" in text and "ETA" not in text
        assert "Epoch   2/2" in text and "Step    5/5" in text
        assert finished_run.name in text
        # AND the elapsed time is the run's own, not the time since
        assert app.run_screen.model.elapsed() == ended.time - events[0].time
        # AND the table holds the last epoch's valid metrics, the monitored one starred with its best
        accuracy = f"{last_epoch.metrics['accuracy']:.4g}"
        assert re.search(rf"★ accuracy\s+{re.escape(accuracy)}\s", text)
        assert f"{last_epoch.metrics['loss']:.4g}" in text
        # AND the log ends with the end of the run; commands are off
        assert "run ended: completed" in text
        assert "⊘ replay: commands go to live runs only" in text
        assert app.run_screen.check_action("checkpoint", ()) is None
