"""Resize-safe: after 200x60 -> 80x24 -> 120x40 every panel reads as it does when opened at that size."""

from __future__ import annotations

from helpers.tui import ScriptedRun, ScriptedSource, settle, until
from scorch_tui.app import ScorchApp
from scorch_tui.sources import ConnectionChanged


def finished_replay() -> tuple[ScorchApp, ScriptedSource]:
    run = ScriptedRun(epochs=6)
    source = ScriptedSource()
    source.feed(ConnectionChanged("replay", "/runs/r/events.jsonl"), *run.through(6), *run.ended("completed"))
    return ScorchApp(source, clock=run.clock), source


async def screen_at(size: tuple[int, int]) -> str:
    app, _ = finished_replay()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        return app.export_text()


async def test_a_replay_resized_down_and_up_reads_like_one_opened_at_that_size():
    # GIVEN a finished run replayed at 200x60 (nothing arrives any more: only a resize can redraw it)
    fresh = {size: await screen_at(size) for size in ((80, 24), (120, 40))}
    app, _ = finished_replay()
    async with app.run_test(size=(200, 60)) as pilot:
        await settle(pilot)
        for size in ((80, 24), (120, 40)):
            # WHEN the terminal shrinks to 80x24, then grows to 120x40
            await pilot.resize_terminal(*size)
            await until(pilot, lambda want=fresh[size]: app.export_text() == want)  # redraws take what the machine gives
            # THEN the screen is the one a fresh open at that size shows
            assert app.export_text() == fresh[size], f"at {size}:\n{app.export_text()}\n--- fresh:\n{fresh[size]}"
