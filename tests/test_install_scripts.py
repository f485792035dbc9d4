"""scripts/install-horovod.sh says what it does while it builds, and where its wheel cache is."""

from __future__ import annotations

import subprocess

from helpers.runs import ROOT

SCRIPT = ROOT / "scripts" / "install-horovod.sh"


def script_part(start: str, end: str) -> str:
    """The lines of the script from the one starting with `start` to the next starting with `end`."""
    lines = SCRIPT.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(start))
    last = next(i for i in range(first, len(lines)) if lines[i].startswith(end))
    return "\n".join(lines[first : last + 1])


def test_the_build_prints_a_line_every_30_seconds_with_the_elapsed_time():
    # GIVEN the script's progress wrapper around a "build" of 61 s that then fails with code 3
    program = "log() { echo \"[install-horovod] $*\"; }\n" + script_part("with_progress() {", "}") + \
        '\nwith_progress "building horovod" bash -c "sleep 61; exit 3"\necho "exit $?"'
    out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=120).stdout
    # THEN a line at 30 s and at 60 s, and the build's own exit code comes back
    assert out.splitlines() == ["[install-horovod] building horovod: 0 min 30 s so far",
                                "[install-horovod] building horovod: 1 min 0 s so far", "exit 3"], out


def test_the_wheel_cache_honours_scorch_wheel_cache_then_xdg_cache_home():
    line = script_part("CACHE_DIR=", "CACHE_DIR=")

    def cache_dir(**env: str) -> str:
        return subprocess.run(["bash", "-c", f'{line}\necho "$CACHE_DIR"'], capture_output=True, text=True,
                              env={"HOME": "/home/u", **env}).stdout.strip()

    assert cache_dir() == "/home/u/.cache/scorch/wheels"
    assert cache_dir(XDG_CACHE_HOME="/xdg") == "/xdg/scorch/wheels"
    assert cache_dir(XDG_CACHE_HOME="/xdg", SCORCH_WHEEL_CACHE="/wheels") == "/wheels"
    usage = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True).stdout
    assert "SCORCH_WHEEL_CACHE" in usage and "XDG_CACHE_HOME" in usage and "4 minutes" in usage
