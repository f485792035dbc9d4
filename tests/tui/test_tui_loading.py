"""A long replay loads in the open: LOADING n % in the header (never RUNNING or an ETA of a run that ended),
keys answered while it loads, the history handed over in slices the screen asks for."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from helpers.long_log import write_long_run
from helpers.tui import until
from scorch_tui.app import ScorchApp
from scorch_tui.screens.help import HelpScreen
from scorch_tui.sources import FIRST_BATCH, MAX_BATCH, Loading, ReplaySource, SourceReader

from scorch.telemetry.protocol import Event


@pytest.fixture(scope="module")
def long_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GIVEN a finished 2-rank run whose event log has about 60,000 lines (a quarter of the issue's 226,000)."""
    run_dir = tmp_path_factory.mktemp("long") / "20241027-033320-char_transformer"
    write_long_run(str(run_dir), 60_000, epochs=12)
    return run_dir


def test_a_replay_says_how_far_it_has_read_and_hands_over_a_small_first_slice(long_run: Path):
    # WHEN the replay source reads the long log
    source = ReplaySource(str(long_run))
    batches = []
    while not batches or not any(isinstance(i, Loading) and i.done == i.total for i in batches[-1]):
        batches.append(source.read(0.0))
    # THEN the first slice is small (the screen fills at once), the others at most MAX_BATCH events
    events = [[i for i in batch if isinstance(i, Event)] for batch in batches]
    assert 0 < len(events[0]) <= FIRST_BATCH and all(len(e) <= MAX_BATCH for e in events)
    # AND each batch says how far through the log it is, rising to the whole file
    progress = [i for batch in batches for i in batch if isinstance(i, Loading)]
    assert len(progress) == len(batches) and progress[-1].total == (long_run / "events.jsonl").stat().st_size
    assert [p.done for p in progress] == sorted(p.done for p in progress) and progress[0].done < progress[-1].total
    assert sum(len(e) for e in events) == len((long_run / "events.jsonl").read_bytes().splitlines())


def test_a_paced_reader_hands_over_the_next_batch_only_when_the_last_was_taken(long_run: Path):
    # GIVEN a paced reader on the long replay, whose consumer has not taken its first batch yet
    got: list[list] = []
    arrived = threading.Event()
    reader = SourceReader(ReplaySource(str(long_run)), lambda items: (got.append(items), arrived.set()), paced=True)
    reader.start()
    try:
        assert arrived.wait(30), "no first batch"
        # WHEN the consumer is still busy with it
        time.sleep(0.5)
        # THEN no second batch was handed over (the keys are not queued behind a pile of batches)
        assert len(got) == 1
        # AND taking it lets the next one come
        arrived.clear()
        reader.taken()
        assert arrived.wait(30) and len(got) == 2
    finally:
        reader.stop()


async def test_the_header_says_loading_not_running_and_keys_work_while_a_long_replay_loads(long_run: Path):
    app = ScorchApp(ReplaySource(str(long_run)))
    headers: list[str] = []
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.run_screen
        assert screen is not None

        def header() -> str:
            line = app.export_text().splitlines()[0]
            headers.append(line)
            return line

        # WHEN the long replay is opened, THEN the header says it is loading, with how far it has got
        await until(pilot, lambda: "LOADING" in header(), timeout=30)
        assert re.search(r"LOADING\s+\d+ % of the event log · run completed", headers[-1]), headers[-1]
        # AND a key pressed while it loads is answered (the help opens over the loading run)
        assert screen.model.loading is not None
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), timeout=10)
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        # AND once the whole log is read the header is the run's end, with its percentage gone
        await until(pilot, lambda: screen.model.loading is None and "COMPLETED" in header(), timeout=120)
        assert "LOADING" not in headers[-1] and "REPLAY" in headers[-1]
    # AND at no point did the header show the ended run as running, or an ETA
    assert not [h for h in headers if "RUNNING" in h or "ETA" in h]
