"""The README's first-contact facts are the program's: the commands CI runs, the Python version."""

from __future__ import annotations

import importlib.util
import re

import tomllib
from helpers.runs import ROOT

spec = importlib.util.spec_from_file_location("readme_command", ROOT / ".ci" / "readme_command.py")
readme_command = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_command)


def test_ci_runs_the_readme_commands_read_out_of_the_readme():
    assert readme_command.command(1).startswith("bash scripts/install.sh && scorch-train --model examples/digits/model.py")
    assert readme_command.command(2) == "bash scripts/install.sh --test && python3 -m pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "command1=$(python3 .ci/readme_command.py 1)" in ci and 'eval "$command1"' in ci
    assert "command2=$(python3 .ci/readme_command.py 2)" in ci and 'eval "$command2"' in ci
    assert ci.index('eval "$command1"') < ci.index("python3 -m mypy") < ci.index('eval "$command2"')


def test_a_readme_without_the_command_is_refused():
    text = "## The two commands\n\n```bash\n# 2. tests\nbash x\n```\n"
    try:
        readme_command.command(1, text)
    except SystemExit as exc:
        assert "no command '# 1.'" in str(exc)
    else:
        raise AssertionError("a missing command 1 was not noticed")


def test_the_python_version_is_the_same_in_the_readme_and_the_package():
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert required == ">=3.10"
    assert re.search(r"with Python 3\.10\+", (ROOT / "README.md").read_text())
