"""What the run is and where the view comes from: the run info screen (i) with its settings, times and hosts'
CPU/RAM; event times as clock times (w); "via ssh" in the header; the picker's age, duration, host and help."""

from __future__ import annotations

import time
from pathlib import Path

from helpers.long_log import write_long_run
from helpers.tui import T0, ScriptedRun, ScriptedSource, settle, until
from scorch_tui.app import ScorchApp
from scorch_tui.runs import RunEntry, read_entry
from scorch_tui.screens.help import HelpScreen
from scorch_tui.screens.run_info import RunInfoScreen
from scorch_tui.sources import ConnectionChanged

from scorch.telemetry.protocol import System

LIVE = ConnectionChanged("live", "tcp://127.0.0.1:5556")


def host_figures(run: ScriptedRun) -> list:
    """A system event whose ranks also carry their host's whole-machine CPU and RAM (as sysstats sends)."""
    ranks = []
    for rank in range(run.world):
        host = ["gpu-a", "gpu-a", "gpu-b", "gpu-b"][rank]
        ranks.append({"rank": rank, "host": host, "cpu": 99.0, "ram": 3 * 2**30, "ram_total": 64 * 2**30,
                      "host_cpu": 41.0 if host == "gpu-a" else 87.0, "host_ram": (20 if host == "gpu-a" else 50) * 2**30})
    return [run.stamp(System(ranks=ranks))]


def live_app(via: str = "") -> tuple[ScorchApp, ScriptedRun]:
    run = ScriptedRun()
    source = ScriptedSource()
    source.via = via
    source.feed(LIVE, *run.through(2, 30), *host_figures(run), *run.log("rank 1: slow batch", "warning"))
    return ScorchApp(source, clock=run.clock), run


async def test_i_shows_the_runs_settings_its_start_time_and_each_hosts_cpu_and_ram():
    app, run = live_app()
    async with app.run_test(size=(80, 40)) as pilot:
        await settle(pilot)
        # WHEN the user presses i
        await pilot.press("i")
        await until(pilot, lambda: isinstance(app.screen, RunInfoScreen))
        text = app.export_text()
        # THEN the run's recorded settings are there: batch per rank and in all, epochs, the monitored metric
        assert "batch 64 per rank (256 a step in all)" in text and "main (higher is better)" in text
        assert "4 on gpu-a, gpu-b" in text and "cuda:0" in text and "horovod" in text
        # AND when it started, on the wall clock
        assert time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(T0)) in text
        # AND each host's whole-machine CPU and RAM, with the ranks on it
        assert "cpu 41%" in text and "ram 20G of 64G" in text and "ranks 0, 1" in text
        assert "cpu 87%" in text and "ram 50G of 64G" in text and "ranks 2, 3" in text
        # AND i again closes it
        await pilot.press("i")
        await until(pilot, lambda: not isinstance(app.screen, RunInfoScreen))
        assert not isinstance(app.screen, RunInfoScreen)


async def test_w_shows_event_times_as_clock_times_and_back():
    app, run = live_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        started_note = "00:00:00 · run started"
        assert started_note in app.export_text()
        # WHEN the user presses w
        await pilot.press("w")
        await until(pilot, lambda: "events (clock)" in app.export_text())
        # THEN the events' times are the clock's: the run started at T0 on this machine's clock
        text = app.export_text()
        assert f"{time.strftime('%H:%M:%S', time.localtime(T0))} · run started" in text and started_note not in text
        # AND w again goes back to times since the start
        await pilot.press("w")
        await until(pilot, lambda: started_note in app.export_text())
        assert "events (clock)" not in app.export_text()


async def test_the_header_says_the_view_goes_through_ssh_at_any_width():
    # GIVEN a run watched through ssh: at 120 columns the header names the destination, at 80 it still says ssh
    # (the run's name gives way)
    for size, shown in (((120, 40), "via ssh me@gpu-node"), ((80, 24), "via ssh")):
        app, _ = live_app(via="ssh me@gpu-node")
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            header = app.export_text().splitlines()[0]
            assert shown in header and "LIVE" in header and "ETA" in header and "20240101-" in header, header


async def test_the_picker_shows_age_duration_host_and_a_help_screen():
    now = T0 + 10 * 3600
    entries = [
        RunEntry("/runs/b", "20240102-093000-resnet", "running", "live", 5, 10, "main 0.62 @4", now - 2 * 3600,
                 hosts=("gpu-a", "gpu-b")),
        RunEntry("/runs/a", "20240101-120000-resnet", "completed", "finished", 10, 10, "main 0.7 @9", now - 3 * 86400,
                 ended=now - 3 * 86400 + 5400, hosts=("node7",)),
        RunEntry("/runs/d", "20231230-080000-mlp", "running", "dead", 3, 30, "", now - 600, "process 4242 is gone",
                 ended=now - 300, hosts=("gpu-a",)),
    ]
    app = ScorchApp(runs_folder="runs", lister=lambda folder: entries, refresh_list=False, clock=lambda: now)
    async with app.run_test(size=(120, 24)) as pilot:
        await until(pilot, lambda: "resnet" in app.export_text())
        lines = app.export_text().splitlines()
        live = next(line for line in lines if "093000" in line)
        done = next(line for line in lines if "120000" in line)
        dead = next(line for line in lines if "080000" in line)
        # THEN each run says how long ago it started, how long it ran (a live one: so far) and where
        assert "2h ago" in live and "02:00:00" in live and "gpu-a, gpu-b" in live
        assert "3d ago" in done and "01:30:00" in done and "node7" in done
        assert "10m ago" in dead and "00:05:00" in dead
        # AND the highlighted run's folder is spelt out under the list
        assert "/runs/b" in app.export_text()
        # AND ? opens the picker's own help, which explains the columns
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert "how long ago the run started" in app.export_text()


def test_a_run_folder_lists_with_its_hosts_and_how_long_it_took(tmp_path: Path):
    # GIVEN a finished run folder as scorch writes it
    write_long_run(str(tmp_path / "r"), 200, epochs=2)
    entry = read_entry(str(tmp_path / "r"))
    # THEN its entry knows where it ran and how long it took (run.json's started and ended)
    assert entry.hosts == ("gpu-a", "gpu-b")
    assert entry.ended is not None and entry.took(0.0) == entry.ended - entry.started > 0
