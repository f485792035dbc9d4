"""The events panel and the keys: scrollback that stays, ellipses, the start kept, the latest error pinned;
ctrl+c quits; the palette offers only what applies."""

from __future__ import annotations

from helpers.tui import ScriptedRun, ScriptedSource, settle, until
from scorch_tui.app import ScorchApp
from scorch_tui.sources import LIVE, ConnectionChanged
from scorch_tui.widgets.event_log import EventLog
from textual.command import CommandPalette


def events_text(app: ScorchApp) -> list[str]:
    lines = app.export_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("─events"))
    return lines[start:]


async def test_scrolled_up_events_stay_put_while_new_ones_arrive():
    # GIVEN a live run with many events, the view scrolled to the top of the events panel
    run = ScriptedRun()
    source = ScriptedSource()
    source.feed(ConnectionChanged(LIVE), *run.through(2, 10), *[e for i in range(60) for e in run.log(f"warning {i}")])
    app = ScorchApp(source, clock=run.clock)
    async with app.run_test(size=(80, 40)) as pilot:
        await settle(pilot)
        log = app.run_screen.query_one(EventLog)
        assert log.at_end and "warning 59" in "\n".join(events_text(app))
        log.scroll_home(animate=False)
        await pilot.pause()
        top = "\n".join(events_text(app))
        # WHEN more events come
        source.feed(*[e for i in range(60, 70) for e in run.log(f"warning {i}")])
        await settle(pilot)
        # THEN the view stays where the user put it, the run's start on screen
        assert "\n".join(events_text(app)) == top and "run started" in top
        # AND back at the bottom it follows new events again
        log.scroll_end(animate=False)
        await pilot.pause()
        source.feed(*run.log("warning 70"))
        await settle(pilot)
        assert "warning 70" in "\n".join(events_text(app))


async def test_long_lines_end_in_an_ellipsis_and_the_start_and_the_latest_error_are_kept():
    # GIVEN a run with an error early on, then more events than the panel keeps
    run = ScriptedRun()
    source = ScriptedSource()
    source.feed(ConnectionChanged(LIVE), *run.started(), *run.log("data loader worker 3 died: " + "x" * 200, "error"),
                *[e for i in range(1200) for e in run.log(f"note {i}", "info")])
    app = ScorchApp(source, clock=run.clock)
    async with app.run_test(size=(80, 30)) as pilot:
        await settle(pilot)
        log = app.run_screen.query_one(EventLog)
        log.scroll_home(animate=False)
        await pilot.pause()
        lines = events_text(app)
        written = [strip.text for strip in log.lines]
    # THEN the error stays pinned in the panel's title, cut with an ellipsis
    assert lines[0].startswith("─events  00:00:00 · data loader worker 3 died: xxx") and "…" in lines[0], lines[0]
    # AND the run's start is still at the top, the cut line ends in "…", and a line says how many are left out
    body = "\n".join(lines[1:])
    assert "run started" in body, body
    assert any(line.rstrip().endswith("x…") for line in lines[1:]), body
    assert written[0].lstrip().startswith("00:00:00 · run started")
    assert any("more events (all of them in events.jsonl)" in line for line in written[:30]), written[:30]
    assert written[-1].rstrip().endswith("note 1199")


async def test_ctrl_c_quits_and_the_palette_offers_what_applies_and_closes_with_escape():
    run = ScriptedRun()
    source = ScriptedSource()
    source.feed(ConnectionChanged(LIVE), *run.through(1, 10))
    app = ScorchApp(source, clock=run.clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Screenshot" not in titles and "Keys" not in titles and "Maximize" not in titles
        assert {"Checkpoint now", "Stop the run", "Help", "Quit"} <= set(titles)
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette))
        assert isinstance(app.screen, CommandPalette)
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, CommandPalette))
        assert not isinstance(app.screen, CommandPalette)
        await pilot.press("ctrl+c")
        await until(pilot, lambda: not app.is_running)
        assert not app.is_running
