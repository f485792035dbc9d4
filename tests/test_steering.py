"""Steering (scorch/steering.py): what a person types, the agreement's encoding, the lr scale on top of a schedule."""

from __future__ import annotations

import math

import pytest
import torch

from scorch import steering
from scorch.agreement import SLOTS, Agreement, alone
from scorch.schedules import Schedule
from scorch.steering import NEUTRAL, Steerer, SteerError, Steering, check, decode, encode, resolve
from scorch.telemetry.control import KINDS, Control, Request


@pytest.mark.parametrize("command, value, parsed", [
    ("lr", "x0.5", ("x", 0.5)), ("lr", "*2", ("x", 2.0)), ("lr", "0.5x", ("x", 0.5)), ("lr", " X 3 ", ("x", 3.0)),
    ("lr", "1e-4", ("=", 1e-4)), ("lr", "reset", ("reset", 1.0)),
    ("patience", "5", 5), ("patience", "off", 0), ("patience", "0", 0),
    ("checkpoint-every", "10m", 600.0), ("checkpoint-every", "10", 600.0), ("checkpoint-every", "30s", 30.0),
    ("checkpoint-every", "1.5h", 5400.0), ("checkpoint-every", "off", 0.0),
    ("pause", None, None), ("resume", "", None),
])
def test_the_forms_a_person_types_are_read(command, value, parsed):
    assert check(command, value) == parsed


@pytest.mark.parametrize("command, value, says", [
    ("lr", None, "lr needs a value: lr x0.5"), ("lr", "x0", "not understood"), ("lr", "-1", "not understood"),
    ("lr", "nan", "not understood"), ("lr", "xinf", "not understood"), ("lr", "fast", "not understood"),
    ("patience", "-2", "not understood"), ("patience", "1.5", "not understood"),
    ("checkpoint-every", "0.5s", "not understood"), ("checkpoint-every", "10 days", "not understood"),
    ("pause", "now", "pause takes no value"), ("lr", "x" * 40, "too long"), ("lr", 0.5, "lr needs a value"),
])
def test_a_bad_value_is_refused_naming_the_form_expected(command, value, says):
    with pytest.raises(SteerError, match=says):
        check(command, value)


def max_reduce(*rows: list[int]) -> list[int]:
    """What the agreement's allreduce(max) does to the ranks' slots."""
    return torch.tensor(rows, dtype=torch.int64).max(dim=0).values.tolist()


@pytest.mark.parametrize("state", [
    Steering(), Steering(paused=True), Steering(lr_scale=0.5), Steering(lr_scale=1e-4 / 3e-2),
    Steering(lr_scale=7.3e-5, patience=0, checkpoint_every=600.0), Steering(patience=12, checkpoint_every=1.5),
])
def test_rank_zeros_steering_survives_the_max_reduction_bit_for_bit(state):
    # GIVEN rank 0's new steering and three other ranks with nothing (the neutral value)
    reduced = max_reduce(encode(state), encode(None), encode(None), encode(None))
    # THEN every rank decodes the very float rank 0 sent (its bit pattern travelled), and the rest
    assert decode(reduced) == state
    assert decode(reduced).lr_scale.hex() == state.lr_scale.hex()


def test_no_steering_anywhere_decodes_as_no_change():
    assert decode(max_reduce(encode(None), encode(None))) is None
    assert encode(None) == [NEUTRAL] * steering.SLOTS


def test_the_agreement_tensor_carries_the_kinds_the_steering_the_nan_key_and_the_stride():
    class Engine:  # one rank's view of two: what it sends, and the others' neutral slots max-reduced into it
        size, rank, is_global_zero = 2, 0, True

        def __init__(self) -> None:
            self.sent: list[int] = []

        def allreduce(self, tensor: torch.Tensor, op: str) -> torch.Tensor:
            assert op == "max" and tensor.dtype == torch.int64
            self.sent = tensor.tolist()
            other = [0] * len(KINDS) + encode(None) + [-(2**62), 0]
            return torch.tensor(max_reduce(self.sent, other))

    engine, control = Engine(), Control()
    agreement = Agreement(engine, control, emit=lambda *a, **k: None, progress=lambda: (0, "training"))
    control.request("lr", id="a", value="x0.5")
    control.request("checkpoint", id="b")
    agreed = agreement.agree(10, 0, lambda requests: resolve(Steering(), requests, 0.1)[0])
    agreement.close()
    assert len(engine.sent) == SLOTS
    assert [r.id for r in agreed.requests] == ["b"] and [r.id for r in agreed.steered] == ["a"]
    assert agreed.steering == Steering(lr_scale=0.5)


def test_resolve_composes_requests_in_order_and_refuses_what_it_cannot_read():
    requests = [Request("pause"), Request("lr", value="x0.5"), Request("lr", value="x0.5"), Request("resume"),
                Request("lr", value="bogus"), Request("patience", value="off"), Request("checkpoint-every", value="10m")]
    new, said = resolve(Steering(), requests, lr=0.1)
    assert new == Steering(paused=False, lr_scale=0.25, patience=0, checkpoint_every=600.0)
    assert [status for status, _ in said] == ["applied"] * 4 + ["refused", "applied", "applied"]
    assert "0.025 now" in said[2][1] and "not understood" in said[4][1]
    # a value sets the first group's rate now: the scale is that over what the schedule gives
    new, said = resolve(Steering(lr_scale=0.5), [Request("lr", value="1e-3")], lr=0.05)
    assert math.isclose(new.lr_scale, 1e-3 / 0.1) and "0.001 now" in said[0][1]
    new, _ = resolve(new, [Request("lr", value="reset")], lr=1e-3)
    assert new.lr_scale == 1.0


def test_steering_words_for_the_header():
    assert Steering().words() == []
    assert Steering(paused=True, lr_scale=0.5, patience=5, checkpoint_every=600).words() == [
        "paused", "lr x0.5", "patience 5", "ckpt every 10 min"]
    assert Steering(patience=0).words() == ["patience off"]


class Monitor:
    patience = 3


def parts(scheduler: str):
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD([{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 0.01}])

    class Socket:
        pass

    socket = Socket()
    socket.scheduler = (torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5) if scheduler == "step"
                        else torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[0.1, 0.01], total_steps=20))
    socket.scheduler_interval = "step"
    return optimizer, Schedule(socket, "model.py")


@pytest.mark.parametrize("scheduler", ["step", "onecycle"])
def test_the_lr_scale_multiplies_what_the_scheduler_gives_in_every_group(scheduler):
    # GIVEN the same schedule twice, one of them steered to x0.5 after 4 steps
    plain_opt, plain = parts(scheduler)
    opt, schedule = parts(scheduler)
    steerer = Steerer(opt, schedule, Monitor(), Control(), timed=False)
    for step in range(12):
        if step == 4:
            steerer.apply(Steering(lr_scale=0.5))
        for o, s in ((plain_opt, plain), (opt, schedule)):
            o.step()
            s.after_step()
        # THEN the steered rates are the schedule's x0.5 from then on, in both groups (chainable StepLR too)
        factor = 0.5 if step >= 4 else 1.0
        for mine, theirs in zip(opt.param_groups, plain_opt.param_groups):
            assert math.isclose(mine["lr"], theirs["lr"] * factor, rel_tol=1e-12)
    # and the scheduler's own state holds the schedule's rates (a resume restores both halves)
    assert [math.isclose(a, b) for a, b in zip(schedule.scheduler.get_last_lr(), plain.scheduler.get_last_lr())] == [True] * 2


def test_patience_steers_the_monitor_and_none_gives_back_the_flag():
    monitor = Monitor()
    steerer = Steerer(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), Schedule(object(), "m.py"),
                      monitor, Control(), timed=False)
    steerer.apply(Steering(patience=0))
    assert monitor.patience == 0
    steerer.load_state_dict(Steering(patience=7, paused=True).to_dict())
    assert monitor.patience == 7 and steerer.now.paused  # a resume keeps the pause (Trainer.fit holds first)
    steerer.load_state_dict(Steering(patience=7).to_dict(), keep_patience=True)  # --early-stop-patience given again
    assert monitor.patience == 3


def test_one_rank_settles_without_an_agreement():
    agreed = alone([Request("stop", id="s"), Request("pause", id="p")], lambda requests: Steering(paused=True))
    assert [r.id for r in agreed.requests] == ["s"] and agreed.steering == Steering(paused=True)
