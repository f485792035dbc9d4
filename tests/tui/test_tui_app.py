"""The dashboard driven by a scripted source under App.run_test(): a whole run, the keys, the states."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time

import pytest
from helpers.tui import ScriptedRun, ScriptedSource, settle
from scorch_tui.app import ScorchApp
from scorch_tui.runs import RunEntry
from scorch_tui.screens.confirm_stop import ConfirmStop
from scorch_tui.screens.help import HelpScreen
from scorch_tui.screens.picker import PickerScreen
from scorch_tui.screens.run_view import RunScreen
from scorch_tui.sources import ConnectionChanged
from scorch_tui.widgets.chart_grid import ChartGrid
from scorch_tui.widgets.progress_panel import ProgressPanel

LIVE = ConnectionChanged("live", "tcp://127.0.0.1:5556")


def dashboard(source: ScriptedSource, run: ScriptedRun) -> ScorchApp:
    return ScorchApp(source, clock=run.clock)


async def test_a_whole_run_moves_every_panel():
    # GIVEN a dashboard on a scripted 4-rank run that has just started
    run, source = ScriptedRun(), ScriptedSource()
    app = dashboard(source, run)
    async with app.run_test(size=(80, 24)) as pilot:
        source.feed(LIVE, *run.started())
        await settle(pilot)
        screen = app.run_screen
        text = app.export_text()
        assert " LIVE " in text and "RUNNING" in text and "20240101-120000-resnet" in text
        assert "Epoch   1/10" in text and "waiting for data" in text

        # WHEN the first epoch's steps arrive
        source.feed(*run.steps_of(0, 60))
        await settle(pilot)
        # THEN the step bar and the loss chart move
        text = app.export_text()
        assert "Step   60/100" in text
        assert screen.model.train_loss.count == 6
        assert "━ train" in str(app.run_screen.query_one(ChartGrid).charts["loss"].border_title)

        # WHEN the epoch ends with metrics and system figures
        source.feed(*run.steps_of(0, 100)[6:], *run.system(slow_rank=2), *run.system(slow_rank=2),
                    *run.system(slow_rank=2), *run.epoch_end(0))  # a straggler is one that stays slow
        await settle(pilot)
        text = app.export_text()
        # THEN the table shows each metric's last and best with its epoch; main is shown once, as accuracy
        assert re.search(r"★ accuracy\s+0\.5\s+0\.5\s+1\s", text)
        assert "f1" in text and "train loss" in text
        # AND there is a chart per metric besides loss
        assert set(app.run_screen.query_one(ChartGrid).charts) == {"loss", "metric-accuracy", "metric-f1"}
        # AND the ranks panel marks the slowest rank
        assert "slowest: rank 2" in text
        slow_line = next(line for line in text.splitlines() if "◀" in line)
        assert "80ms" in slow_line
        # AND the checkpoint shows in the event log
        assert "checkpoint saved (epoch)" in text

        # WHEN the run goes on to its end
        for epoch in range(1, 10):
            source.feed(*run.steps_of(epoch, 100), *run.epoch_end(epoch))
        source.feed(*run.ended("completed"))
        await settle(pilot)
        text = app.export_text()
        # THEN it shows the end: state, full bars, best at the last epoch, no ETA
        assert "COMPLETED" in text and "ETA" not in text
        assert "Epoch  10/10" in text and "100%" in text
        assert re.search(r"★ accuracy\s+0\.86\s+0\.86\s+10\s", text)
        assert "run ended: completed" in text
        assert "the run has ended" in text
        assert screen.check_action("checkpoint", ()) is None


async def test_c_checkpoints_and_the_ack_shows():
    run, source = ScriptedRun(), ScriptedSource()
    app = dashboard(source, run)
    async with app.run_test(size=(80, 24)) as pilot:
        source.feed(LIVE, *run.through(1, 30))
        await settle(pilot)
        # WHEN the user presses c
        await pilot.press("c")
        await settle(pilot)
        # THEN one checkpoint command went out and its acknowledgement is on screen
        assert source.sent == [("checkpoint", False)]
        assert "checkpoint: accepted" in app.export_text()
        # AND when the run applies it, the log says so
        source.feed(*run.command_applied("checkpoint", "cmd1"))
        await settle(pilot)
        assert "checkpoint applied at step 130" in app.export_text()


@pytest.mark.parametrize(("answer", "sent"), [("y", [("stop", False)]), ("e", [("stop", True)]), ("n", []),
                                               ("escape", [])])
async def test_s_asks_before_stopping(answer, sent):
    run, source = ScriptedRun(), ScriptedSource()
    app = dashboard(source, run)
    async with app.run_test(size=(80, 24)) as pilot:
        source.feed(LIVE, *run.through(1, 30))
        await settle(pilot)
        # WHEN the user presses s
        await pilot.press("s")
        await pilot.pause()
        # THEN nothing is sent yet: a question is asked
        assert isinstance(app.screen, ConfirmStop)
        assert source.sent == []
        # WHEN they answer
        await pilot.press(answer)
        await settle(pilot)
        # THEN only y (now) or e (after this epoch) stops the run
        assert isinstance(app.screen, RunScreen)
        assert source.sent == sent


async def test_q_quits_and_sends_nothing():
    run, source = ScriptedRun(), ScriptedSource()
    app = dashboard(source, run)
    async with app.run_test(size=(80, 24)) as pilot:
        source.feed(LIVE, *run.through(1, 30))
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running
    # THEN the job was told nothing, and the dashboard let go of the source
    assert source.sent == []
    assert source.closed


async def test_a_refused_command_shows_why():
    run, source = ScriptedRun(), ScriptedSource(ack_status="refused", ack_reason="wrong token")
    app = dashboard(source, run)
    async with app.run_test(size=(80, 24)) as pilot:
        source.feed(LIVE, *run.through(1, 30))
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        assert "checkpoint: refused (wrong token)" in app.export_text()


async def test_read_only_disables_commands_and_says_why():
    # GIVEN a connection without the token
    run = ScriptedRun()
    source = ScriptedSource(commands_off="read-only: no token (cannot read /r/.token; pass --token-file)")
    app = dashboard(source, run)
    async with app.run_test(size=(80, 24)) as pilot:
        source.feed(LIVE, *run.through(1, 30))
        await settle(pilot)
        # THEN the reason is on screen and the keys are greyed out
        assert "⊘ read-only: no token (cannot read /r/.token; pass --token-file)" in app.export_text()
        screen = app.run_screen
        assert screen.check_action("checkpoint", ()) is None and screen.check_action("stop", ()) is None
        # AND pressing them sends nothing
        await pilot.press("c", "s", "y")
        await settle(pilot)
        assert source.sent == []
        assert isinstance(app.screen, RunScreen)


async def test_a_disconnect_shows_and_recovers():
    run, source = ScriptedRun(), ScriptedSource()
    app = dashboard(source, run)
    async with app.run_test(size=(80, 24)) as pilot:
        source.feed(LIVE, *run.through(1, 30))
        await settle(pilot)
        # WHEN the connection drops
        source.connection("reconnecting", "no answer from the run at tcp://127.0.0.1:5556 within 3 s")
        await settle(pilot)
        # THEN the header says so, the log says why, and commands wait
        text = app.export_text()
        assert "RECONNECTING" in text and "connection lost: no answer" in text
        assert app.run_screen.check_action("checkpoint", ()) is None
        # WHEN it comes back and events flow again
        source.feed(LIVE, *run.steps_of(1, 60))
        await settle(pilot)
        text = app.export_text()
        assert " LIVE " in text and "connected again" in text and "Step   60/100" in text
        assert app.run_screen.check_action("checkpoint", ()) is True


async def test_the_palette_offers_the_same_commands():
    run, source = ScriptedRun(), ScriptedSource()
    app = dashboard(source, run)
    async with app.run_test(size=(80, 24)) as pilot:
        source.feed(LIVE, *run.through(1, 30))
        await settle(pilot)
        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert {"Checkpoint now", "Stop the run", "Stop after this epoch", "Help", "Quit"} <= set(titles)
        # WHEN the user opens the palette and picks "Checkpoint now"
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"checkpoint now")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        # THEN the checkpoint went out
        assert source.sent == [("checkpoint", False)]


async def test_help_opens_with_question_mark_and_closes_with_escape():
    run, source = ScriptedRun(), ScriptedSource()
    app = dashboard(source, run)
    async with app.run_test(size=(80, 24)) as pilot:
        source.feed(LIVE, *run.through(1, 30))
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert "quit the dashboard; the job goes on" in app.export_text()
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, RunScreen)


async def test_tab_moves_between_panels_without_a_mouse():
    run, source = ScriptedRun(), ScriptedSource()
    app = dashboard(source, run)
    async with app.run_test(size=(80, 24)) as pilot:
        source.feed(LIVE, *run.through(2, 30))
        await settle(pilot)
        seen = []
        for _ in range(4):
            await pilot.press("tab")
            seen.append(app.focused.id if app.focused else None)
        assert {"charts", "metrics", "ranks", "events"} <= set(seen)


async def test_events_never_redraw_the_panels_only_the_redraw_timer_does(monkeypatch):
    # GIVEN a counter on the progress panel's redraws, and the screen's redraw timer (ten a second) paused
    draws = []
    original = ProgressPanel.show
    monkeypatch.setattr(ProgressPanel, "show", lambda self, model: (draws.append(1), original(self, model)))
    run, source = ScriptedRun(), ScriptedSource()
    app = dashboard(source, run)
    async with app.run_test(size=(80, 24)) as pilot:
        source.feed(LIVE, *run.started())
        await settle(pilot)
        app.run_screen.redraw_timer.pause()
        draws.clear()
        # WHEN thirty step events arrive, each in its own batch
        for step in run.steps_of(0, 30, every=1):
            source.feed(step)
            await settle(pilot, redraw=False)
        # THEN every event was taken in, and none of them redrew the panel: at any event rate, the panels
        # redraw only on the timer's ticks, at most ten a second
        assert app.run_screen.model.step == 30 and draws == []
        # AND the next tick draws them all at once
        app.run_screen.redraw_timer.resume()
        deadline = time.monotonic() + 30
        while not draws:
            assert time.monotonic() < deadline, "the redraw timer did not tick"
            await asyncio.sleep(0.02)
        await pilot.pause()
        assert len(draws) == 1 and "30/100" in app.export_text()


def write_run(folder, name: str, events, state: str, pid: int) -> str:
    path = os.path.join(folder, name)
    os.makedirs(path)
    with open(os.path.join(path, "run.json"), "w") as fh:
        json.dump({"name": name, "state": state, "pid": pid, "hosts": [os.uname().nodename], "started": events[0].time,
                   "config": {"epochs": 10, "monitor": "main"}}, fh)
    with open(os.path.join(path, "events.jsonl"), "w") as fh:
        fh.writelines(event.to_json() + "\n" for event in events)
    return path


async def test_the_picker_lists_runs_and_opens_one(tmp_path):
    # GIVEN a folder with a finished run and a live one (this process stands in for the job)
    finished = ScriptedRun()
    write_run(tmp_path, "old-run", finished.through(3) + finished.ended("early_stopped"), "early_stopped", 1)
    live = ScriptedRun()
    live.now += 3600
    write_run(tmp_path, "new-run", live.through(1, 30), "running", os.getpid())
    opened: list[RunEntry] = []
    sources: list[ScriptedSource] = []

    def opener(entry: RunEntry) -> ScriptedSource:
        opened.append(entry)
        source = ScriptedSource(label=entry.path)
        source.feed(LIVE, *live.through(1, 30)) if entry.name == "new-run" else source.feed(*finished.through(3))
        sources.append(source)
        return source

    app = ScorchApp(runs_folder=str(tmp_path), opener=opener, clock=live.clock, refresh_list=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        # THEN both runs are listed, newest first, with their state, epoch, best and liveness
        text = app.export_text()
        assert isinstance(app.screen, PickerScreen)
        lines = text.splitlines()
        new = next(i for i, line in enumerate(lines) if "new-run" in line)
        old = next(i for i, line in enumerate(lines) if "old-run" in line)
        assert new < old
        assert "● live" in lines[new] and "1/10" in lines[new] and "main 0.5 @1" in lines[new]
        assert "early stopped" in lines[old] and "finished" in lines[old] and "3/10" in lines[old]
        # WHEN the user presses enter on the first (newest) run
        await pilot.press("enter")
        await settle(pilot)
        # THEN its run view opens through the opener
        assert isinstance(app.screen, RunScreen) and opened[0].name == "new-run"
        # AND esc goes back to the list and lets go of that run's source
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, PickerScreen)
        assert sources[0].closed
        # AND down + enter opens the other one
        await pilot.press("down", "enter")
        await settle(pilot)
        assert opened[-1].name == "old-run"
