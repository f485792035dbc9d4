"""TrainConfig: one definition of every option; unknown keys and wrong types refused by name."""

from __future__ import annotations

import pytest

from scorch.cli import build_parser, explicit_flags
from scorch.config import TrainConfig, from_namespace
from scorch.errors import ScorchError


def test_every_field_is_a_flag_with_its_default():
    config = from_namespace(build_parser().parse_args([]))
    assert config == TrainConfig()


def test_flags_parse_to_fields():
    args = ["--epochs", "3", "-b", "8", "--no-tensorboard", "--model-args", '{"width": 4}', "--mode", "min"]
    config = from_namespace(build_parser().parse_args(args))
    assert (config.epochs, config.batch_size, config.tensorboard, config.model_args, config.mode) == (3, 8, False, {"width": 4}, "min")


def test_explicit_flags_are_the_ones_given():
    parser = build_parser()
    assert explicit_flags(parser, ["--epochs", "6", "--no-tensorboard", "--resume", "r"]) == {"epochs", "tensorboard", "resume"}


def test_unknown_key_and_wrong_type_are_refused_by_name():
    with pytest.raises(ScorchError, match="unknown config key 'epoch'"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ScorchError, match="config key 'epochs' must be int, got str"):
        TrainConfig.from_dict({"epochs": "3"})
    assert TrainConfig.from_dict({"min_delta": 1}).min_delta == 1


def test_deprecations_from_our_own_code_are_not_hidden():
    # pyproject.toml's filterwarnings: other packages' DeprecationWarnings are ignored, ours are shown
    import warnings

    with warnings.catch_warnings(record=True) as seen:  # keeps pytest's filters, records what they let through
        warnings.warn_explicit("theirs", DeprecationWarning, "torch/x.py", 1, module="torch.x")
        for module in ("scorch.trainer", "scorch_tui.app"):
            warnings.warn_explicit(f"ours from {module}", DeprecationWarning, "scorch/x.py", 1, module=module)
    assert [str(w.message) for w in seen] == ["ours from scorch.trainer", "ours from scorch_tui.app"]
