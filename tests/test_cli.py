"""scorch-train's first contact: flags, paths and JSON are checked before torch is imported, abbreviations
are refused, --help is grouped with the exit codes, and the README says the same."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import pytest
from helpers.runs import EXAMPLES, ROOT, scorch_env

from scorch.cli import build_parser
from scorch.config import GROUPS, TrainConfig
from scorch.errors import EXIT_CODES

DIGITS = ["--dataset", str(EXAMPLES / "digits" / "dataset.py"), "--dataset-path", str(EXAMPLES / "digits")]


def train_in_fresh_process(*args: str) -> tuple[int, str, bool]:
    """(exit code, stderr, whether torch was imported) of scorch-train's main in a new interpreter."""
    code = ("import json, sys\nfrom scorch.cli import train_main\ncode = train_main(json.loads(sys.argv[1]))\n"
            "print(json.dumps([code, 'torch' in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(list(args))], capture_output=True, text=True,
                          env=scorch_env(), timeout=120)
    exit_code, torch_loaded = json.loads(done.stdout.strip().splitlines()[-1])
    return exit_code, done.stderr, torch_loaded


@pytest.mark.parametrize("args, message", [
    (["--model", "examples/digits/modle.py", *DIGITS], "--model examples/digits/modle.py: no such file"),
    (["--model", str(EXAMPLES / "digits" / "model.py"), "--dataset", "nope/dataset.py", "--dataset-path", "."],
     "--dataset nope/dataset.py: no such file"),
    (["--model", str(EXAMPLES / "digits" / "model.py"), *DIGITS, "--accumulate", "0"], "--accumulate 0: must be at least 1"),
    (["--model", str(EXAMPLES / "digits" / "model.py"), *DIGITS, "--bind", "nohost"], "--bind nohost: expected HOST:PORT"),
    (["--resume", "runs/no-such-run"], "--resume runs/no-such-run: no such run folder or checkpoint file"),
])
def test_bad_flags_and_paths_answer_before_torch_is_imported(tmp_path, args, message):
    # GIVEN a mistyped path or a bad value WHEN scorch-train starts
    code, err, torch_loaded = train_in_fresh_process(*args, "--run-dir", str(tmp_path / "run"))
    # THEN one line names it, exit 2, no traceback, and torch was never imported (the answer comes at once)
    assert code == 2, err
    assert f"scorch-train: error: {message}" in err, err
    assert "Traceback" not in err
    assert not torch_loaded
    assert not (tmp_path / "run").exists()


def test_prefix_abbreviations_of_flags_are_refused():
    # GIVEN `--epoch 3` (argparse would take it for --epochs) WHEN it is parsed THEN it is refused by name, exit 2
    done = subprocess.run([sys.executable, "-m", "scorch.cli", "--epoch", "3", "--model", "m.py", *DIGITS],
                          capture_output=True, text=True, env=scorch_env(), timeout=120)
    assert done.returncode == 2
    assert "unrecognized arguments: --epoch 3" in done.stderr, done.stderr


def test_every_flag_is_in_one_help_group():
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    grouped = [name for names in GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(fields), set(grouped) ^ set(fields)


def test_help_is_grouped_marks_the_required_flags_and_lists_the_exit_codes():
    text = build_parser().format_help()
    # the groups in order
    positions = [text.index(f"\n{title}:\n") for title in GROUPS]
    assert positions == sorted(positions)
    assert re.search(r"--model FILE\s+model file defining Network and Socket \(required,\s+unless --resume\)", text), text
    # the epilog lists every exit code with its meaning
    epilog = text[text.index("exit codes:"):]
    for code, meaning in EXIT_CODES.items():
        assert re.search(rf"^\s+{code}\s+{re.escape(meaning)}$", epilog, re.M), (code, epilog)


def test_readme_lists_the_same_exit_codes():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("Exit codes: 0 "):]
    section = section[: section.index("\n\n")]
    listed = [int(code) for code in re.findall(r"(?:^|[;:]\s)(\d+)\s", section)]
    assert listed == list(EXIT_CODES), section
