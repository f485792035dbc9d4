"""Steady numbers: speed over a window that spans epoch ends, a straggler only when clearly and lastingly
slower, a pending stop shown, a silent rank named."""

from __future__ import annotations

import pytest
from helpers.tui import BATCH, WORLD, ScriptedRun, ScriptedSource, settle
from scorch_tui.app import ScorchApp
from scorch_tui.model import STALLED, RunModel
from scorch_tui.sources import LIVE, ConnectionChanged, HeartbeatSeen

from scorch.telemetry.protocol import Command, Step, System


def model_of(*events: object) -> RunModel:
    model = RunModel(lambda: 0.0)
    model.apply([ConnectionChanged(LIVE), *events])
    return model


def test_speed_is_steady_across_an_epoch_end_and_a_short_last_window():
    # GIVEN steps at a steady 1280 samples/s, an epoch end with 6 s of validation between, and a last step event
    # of an epoch that covers one step only (its own rate is noisy: 300 samples/s)
    run = ScriptedRun()
    events = [*run.started(), *run.steps_of(0, 90)]
    events.append(run.stamp(Step(epoch=0, step=91, epoch_step=91, steps_in_epoch=100, loss=1.0, rate=300.0), 0.2))
    events += run.epoch_end(0)
    run.now += 6.0  # validation and the checkpoint
    events += run.steps_of(1, 40)
    model = model_of(*events)
    # THEN samples/s is the steady figure, not dragged by the validation gap nor swung by the short window
    steady = 10 * BATCH * WORLD / 0.5
    assert model.samples_per_second() == pytest.approx(steady, rel=0.1)
    assert model.steps_per_second() == pytest.approx(20.0, rel=0.1)


def test_a_few_percent_slower_is_no_straggler_and_a_clearly_slower_rank_is_after_three_samples():
    def system(times: list[float]) -> System:
        return System(ranks=[{"rank": r, "step_time": t} for r, t in enumerate(times)])

    model = model_of()
    for _ in range(5):  # 6 % slower: noise
        model.apply([system([0.050, 0.051, 0.053, 0.050])])
    assert model.slowest is None
    model.apply([system([0.050, 0.051, 0.080, 0.050])])
    model.apply([system([0.050, 0.051, 0.080, 0.050])])
    assert model.slowest is None  # twice is not yet lasting
    model.apply([system([0.050, 0.051, 0.080, 0.050])])
    assert model.slowest == 2
    model.apply([system([0.050, 0.080, 0.051, 0.050])])  # another rank now: starts over
    assert model.slowest is None


async def test_a_pending_stop_after_this_epoch_is_in_the_header():
    run = ScriptedRun()
    source = ScriptedSource()
    source.feed(ConnectionChanged(LIVE), *run.through(4, 37), run.stamp(Command(id="c1", command="stop", status="applied", after_epoch=True,
                                                             reason="at epoch 5, step 437")))
    app = ScorchApp(source, clock=run.clock)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        header = app.export_text().splitlines()[0]
    assert "RUNNING · stops after this epoch" in header, header


async def test_stalled_names_the_silent_rank():
    run = ScriptedRun()
    source = ScriptedSource()
    ranks = [{"rank": r, "step_time": 0.05, "state": "silent" if r == 1 else "live"} for r in range(4)]
    source.feed(ConnectionChanged(LIVE), *run.through(4, 37), run.stamp(System(ranks=ranks)),
                HeartbeatSeen(12.0, "waiting for other ranks", run.clock()))
    app = ScorchApp(source, clock=run.clock)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        text = app.export_text()
        assert app.run_screen.model.liveness() == STALLED
    header = text.splitlines()[0]
    assert "no step for 00:00:12 (rank 1 silent)" in header, header
    assert any("50ms silent" in line for line in text.splitlines()), text  # the mark beside its step time
