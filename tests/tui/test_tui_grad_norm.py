"""The progress panel shows the gradient norm when the run logs it (--clip-grad-norm, --log-grad-norm)."""

from __future__ import annotations

from helpers.tui import ScriptedRun, ScriptedSource, settle
from scorch_tui.app import ScorchApp
from scorch_tui.sources import ConnectionChanged

from scorch.telemetry.protocol import Step


async def test_grad_norm_shows_beside_the_learning_rate_only_when_logged():
    # GIVEN a dashboard on a run whose first step events carry no norm, then one that does
    run, source = ScriptedRun(), ScriptedSource()
    app = ScorchApp(source, clock=run.clock)
    async with app.run_test(size=(80, 24)) as pilot:
        source.feed(ConnectionChanged("live", "tcp://127.0.0.1:5556"), *run.started(), *run.steps_of(0, 20))
        await settle(pilot)
        assert "gnorm" not in app.export_text()
        # WHEN a step event brings the norm before clipping
        source.feed(run.stamp(Step(epoch=0, step=30, epoch_step=30, steps_in_epoch=run.steps, loss=1.0, rate=10.0,
                                   lr=0.01, grad_norm=3.25), 0.5))
        await settle(pilot)
        # THEN the progress panel shows it
        assert "gnorm 3.2" in app.export_text()
