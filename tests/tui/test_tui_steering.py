"""Steering from the dashboard under App.run_test(): p pauses and resumes, t opens the steering dialog, which shows
what a command would do before enter sends it, refuses what the run would refuse, and the header shows the result."""

from __future__ import annotations

from helpers.tui import ScriptedRun, ScriptedSource, settle, until
from scorch_tui.app import ScorchApp
from scorch_tui.screens.steer import SteerScreen
from scorch_tui.sources import ConnectionChanged, HeartbeatSeen
from scorch_tui.widgets.run_header import RunHeader

from scorch.telemetry.protocol import Command

LIVE = ConnectionChanged("live", "tcp://127.0.0.1:5556")


def header(app: ScorchApp) -> str:
    return str(app.screen.query_one(RunHeader).render())


async def test_p_pauses_and_on_a_paused_run_resumes():
    run, source = ScriptedRun(), ScriptedSource()
    app = ScorchApp(source, clock=run.clock)
    async with app.run_test(size=(100, 30)) as pilot:
        source.feed(LIVE, *run.through(1, 30), HeartbeatSeen(0.1, "training", run.clock()))
        await settle(pilot)
        # WHEN p is pressed on a training run: a pause goes out, no question asked
        await pilot.press("p")
        await settle(pilot)
        assert source.sent == [("pause", False)]
        # AND once the run holds (its heartbeat says paused), the header says PAUSED and p resumes
        source.feed(run.stamp(Command(id="cmd1", command="pause", status="applied", reason="at epoch 2, step 130: paused",
                                      steering={"paused": True})), HeartbeatSeen(0.2, "paused", run.clock()))
        await settle(pilot)
        assert "PAUSED" in header(app) and "ETA" not in header(app)
        assert "p resume" in app.export_text()
        await pilot.press("p")
        await settle(pilot)
        assert source.sent == [("pause", False), ("resume", False)]


async def test_t_shows_what_an_lr_change_does_then_sends_it_and_the_header_shows_it():
    run, source = ScriptedRun(), ScriptedSource()
    app = ScorchApp(source, clock=run.clock)
    async with app.run_test(size=(100, 30)) as pilot:
        source.feed(LIVE, *run.through(1, 30))
        await settle(pilot)
        lr = app.run_screen.model.lr
        await pilot.press("t")
        await until(pilot, lambda: isinstance(app.screen, SteerScreen))
        # WHEN "lr x0.5" is typed: the dialog says what it would do before anything is sent
        await pilot.press(*"lr x0.5")
        await pilot.pause()
        preview = str(app.screen.query_one("#steer-preview").render())
        assert f"{lr * 0.5:.4g} now" in preview and source.sent == []
        # AND enter sends it
        await pilot.press("enter")
        await settle(pilot)
        assert source.sent == [("lr", False, "x0.5")]
        assert "lr x0.5: accepted" in app.export_text()
        # THEN when the run applies it, the header shows the scale
        source.feed(run.stamp(Command(id="cmd1", command="lr", value="x0.5", status="applied",
                                      steering={"lr_scale": 0.5, "patience": 0})))
        await settle(pilot)
        assert "lr x0.5 · patience off" in header(app)


async def test_the_dialog_refuses_a_bad_value_and_esc_sends_nothing():
    run, source = ScriptedRun(), ScriptedSource()
    app = ScorchApp(source, clock=run.clock)
    async with app.run_test(size=(100, 30)) as pilot:
        source.feed(LIVE, *run.through(1, 30))
        await settle(pilot)
        await pilot.press("t")
        await until(pilot, lambda: isinstance(app.screen, SteerScreen))
        await pilot.press(*"patience soon", "enter")
        await pilot.pause()
        # THEN it says why and stays open, sending nothing
        assert isinstance(app.screen, SteerScreen)
        assert "not understood; patience 5 or patience off" in str(app.screen.query_one("#steer-preview").render())
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, SteerScreen))
        await pilot.press("t")
        await until(pilot, lambda: isinstance(app.screen, SteerScreen))
        await pilot.press(*"checkpoint-every 10m", "escape")
        await settle(pilot)
        assert source.sent == []


async def test_steering_keys_are_off_on_a_read_only_view():
    run, source = ScriptedRun(), ScriptedSource(commands_off="replay: commands go to live runs only")
    app = ScorchApp(source, clock=run.clock)
    async with app.run_test(size=(100, 30)) as pilot:
        source.feed(ConnectionChanged("replay", "/runs/r/events.jsonl"), *run.through(1, 30))
        await settle(pilot)
        await pilot.press("p", "t")
        await settle(pilot)
        assert source.sent == [] and not isinstance(app.screen, SteerScreen)
