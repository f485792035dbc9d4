"""events.jsonl, a run's event log: the one module that opens it. One writer, one reader, one rule.

Every event is one line, the same JSON object as on the wire (scorch/telemetry/protocol.py). The
writer appends each event with one write() of one whole line, so a crash can tear at most the last
line. Every reader (the resumed trainer, the publisher's replay, the dashboard's replay, the tests)
reads through `Reader`, by one rule:

- a last line without its newline is not an event yet: a follower waits for the rest of it; a
  reader of a finished log drops it (and the writer cuts it before it appends again);
- a bad line anywhere else (not JSON, not a valid event, no seq) is skipped and counted: never
  fatal, and it never hides the good events around it;
- a line whose seq is not above the last one read, or more than MAX_SEQ_JUMP above it, is refused,
  counted and warned about: it is not handed out, and it never seeds the numbering of a resumed run
  (a run numbers its events one by one, so a line far ahead was written by hand or pasted in, and
  taking it would make every real event after it look out of order).

A line of an event type this version does not know (a newer scorch wrote it) is a good line: its
seq counts, replay hands its text on, and it decodes to no Event.
No torch here: the dashboard imports this.
"""

from __future__ import annotations

import bisect
import errno
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from scorch.callbacks import Callback
from scorch.fileio import write_error
from scorch.telemetry.protocol import Event, ProtocolError, from_dict, loads

EVENTS_FILE = "events.jsonl"
KEPT_PROBLEMS = 5  # problems a reader keeps word of (all are counted)
MAX_SEQ_JUMP = 1000  # a seq further ahead of the last one than this is not the run's (it numbers one by one)


def path(run_dir: str) -> str:
    """The event log of the run folder `run_dir`."""
    return os.path.join(run_dir, EVENTS_FILE)


@dataclass(frozen=True)
class Line:
    """One good line: its seq, its JSON text (no newline), its event (None: a type unknown here), where it lies."""

    seq: int
    text: bytes
    event: Event | None
    start: int
    end: int


class Reader:
    """Reads the log forwards from byte `offset`, by the rule above; `lines()` again goes on where it stopped
    (a follower calls it as the log grows). `last_seq` is the seq the next line must exceed."""

    def __init__(self, log_path: str, offset: int = 0, last_seq: int = 0) -> None:
        self.path = log_path
        self.offset = offset  # just after the last whole line read
        self.last_seq = last_seq
        self.line_no = 0  # whole lines read (line numbers in messages count from `offset`)
        self.skipped = 0  # bad lines
        self.refused = 0  # lines out of seq order
        self.problems: list[str] = []  # the first KEPT_PROBLEMS of them, in words
        self.torn = False  # a last line without its newline is waiting at `offset`

    def lines(self, limit: int | None = None) -> Iterator[Line]:
        """The good lines from `offset` on, at most `limit`; stops before a torn last line."""
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return
        with fh:
            fh.seek(self.offset)
            given = 0
            for raw in fh:
                if not raw.endswith(b"\n"):
                    self.torn = True
                    return
                self.torn = False
                start, self.offset = self.offset, self.offset + len(raw)
                self.line_no += 1
                line = self._check(raw.rstrip(b"\r\n"), start)
                if line is None:
                    continue
                yield line
                given += 1
                if limit is not None and given >= limit:
                    return

    def _check(self, text: bytes, start: int) -> Line | None:
        if not text.strip():
            return None
        try:
            data = loads(text)
            seq = data.get("seq") if isinstance(data, dict) else None
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise ProtocolError("no integer seq")
            event = from_dict(data)
        except ProtocolError as exc:
            self.skipped += 1
            self._problem(f"line {self.line_no} skipped: {exc}")
            return None
        if seq <= self.last_seq:
            self.refused += 1
            self._problem(f"line {self.line_no} refused: seq {seq} does not follow seq {self.last_seq}")
            return None
        if seq > self.last_seq + MAX_SEQ_JUMP:
            self.refused += 1
            self._problem(f"line {self.line_no} refused: seq {seq} jumps more than {MAX_SEQ_JUMP} past seq {self.last_seq}")
            return None
        self.last_seq = seq
        return Line(seq, text, event, start, self.offset)

    def _problem(self, text: str) -> None:
        if len(self.problems) < KEPT_PROBLEMS:
            self.problems.append(text)

    def events(self, limit: int | None = None) -> list[Event]:
        """The known events among the next good lines."""
        return [line.event for line in self.lines(limit) if line.event is not None]

    def warning(self) -> str:
        """What was skipped or refused so far, in one sentence ("" if nothing)."""
        if not self.skipped and not self.refused:
            return ""
        counts = " and ".join(part for part in (f"{self.skipped} bad lines skipped" if self.skipped else "",
                                                 f"{self.refused} lines out of seq order refused" if self.refused else "")
                              if part)
        return f"{self.path}: {counts} ({'; '.join(self.problems)})"


def read_events(log_path: str) -> list[Event]:
    """Every known event of a log, by the rule above (a finished log: a torn last line is dropped)."""
    return Reader(log_path).events()


def last_of_type(log_path: str, kind: str, tail_bytes: int = 64 * 1024, tail_limit: int = 4 * 1024 * 1024) -> dict | None:
    """The last `kind` event of a log as a dict, reading backwards from the end (at most `tail_limit` bytes):
    the run picker shows each run's latest epoch without reading whole logs."""
    needle = f'"{kind}"'.encode()
    try:
        with open(log_path, "rb") as fh:
            end = fh.seek(0, os.SEEK_END)
            pos, carry = end, b""
            while pos > 0 and end - pos < tail_limit:
                start = max(0, pos - tail_bytes)
                fh.seek(start)
                chunk = fh.read(pos - start) + carry
                lines = chunk.split(b"\n")
                carry = lines.pop(0) if start > 0 else b""
                for text in reversed(lines):
                    if needle in text:
                        try:
                            data = loads(text)
                        except ProtocolError:
                            continue  # a bad or torn line: skipped, as every reader does
                        if isinstance(data, dict) and data.get("type") == kind:
                            return data
                pos = start
    except OSError:
        return None
    return None


class Pages:
    """Pages of the log by seq, for the publisher's `replay`: a sparse index of (seq before, byte offset)
    makes each page cost what it returns, not what precedes it."""

    INDEX_EVERY = 256  # lines between index entries

    def __init__(self, log_path: str) -> None:
        self.path = log_path
        self._seqs = [0]
        self._offsets = [0]

    def page(self, after_seq: int, limit: int, upto_seq: int, max_bytes: int) -> tuple[list[bytes], bool]:
        """JSON texts of the lines with after_seq < seq <= upto_seq, at most `limit` (and about `max_bytes`);
        and whether more remain."""
        i = bisect.bisect_right(self._seqs, after_seq) - 1
        reader = Reader(self.path, self._offsets[i], self._seqs[i])
        texts: list[bytes] = []
        size = since_index = 0
        before = self._seqs[i]  # the seq of the line before the next one
        for line in reader.lines():
            since_index += 1
            if since_index >= self.INDEX_EVERY and line.start > self._offsets[-1]:
                self._seqs.append(before)
                self._offsets.append(line.start)
                since_index = 0
            before = line.seq
            if line.seq <= after_seq:
                continue
            if line.seq > upto_seq:
                return texts, False
            if len(texts) >= limit or size >= max_bytes:
                return texts, True
            texts.append(line.text)
            size += len(line.text)
        return texts, False


class Writer(Callback):
    """Appends every event to the log, one whole line per write(). Opening an existing log (a resumed run)
    reads it once, by the rule above: `last_seq` is where numbering goes on, `visit(line)` sees each good
    line (the publisher's history for late joiners), and a torn last line is cut before anything is appended.

    A write that fails (a full disk) is taken back and raised as an OSError naming the log; after it the log
    takes one more line, `run_ended`, the run's last word (the run folder's .reserve is freed for it), and
    every other event raises that error again: whichever thread met the full disk first, the training
    thread stops at its next event. run_ended itself never raises (the run already ends, for its own
    reason): one that does not fit is told on stderr."""

    def __init__(self, log_path: str, visit: Callable[[Line], None] | None = None) -> None:
        self.path = log_path
        self.error: OSError | None = None  # the write that failed: the log ended there, but for run_ended
        # Unbuffered append: each event is one write() of one whole line.
        self._fd = os.open(log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self.scan = Reader(log_path)
            for line in self.scan.lines():
                if visit is not None:
                    visit(line)
            if self.scan.torn:  # a run killed mid-write left a partial last line
                os.ftruncate(self._fd, self.scan.offset)
        except BaseException:
            os.close(self._fd)
            raise
        self.last_seq = self.scan.last_seq

    def event(self, event: Event) -> None:
        if self._fd < 0:
            return  # closed, or the last word written after a failure
        last_word = event.type == "run_ended"
        if self.error is not None and not last_word:
            raise self.error
        try:
            self._append((event.to_json() + "\n").encode())
        except OSError as exc:
            if not last_word:
                self.error = exc
                raise
            if self.error is None:  # the run ends for its own reason; its log lacks the last line, and says so here
                print(f"scorch-train: warning: could not write run_ended in {self.path}: {write_error(exc)}", file=sys.stderr)
            self.error = self.error or exc
        if self.error is not None:
            self.close()  # the last word is said

    def _append(self, line: bytes) -> None:
        """One whole line, or nothing and an OSError naming the log (a partial line is taken back)."""
        try:
            written = os.write(self._fd, line)
        except OSError as exc:
            raise OSError(exc.errno or errno.EIO, os.strerror(exc.errno or errno.EIO), self.path) from None
        if written < len(line):  # a disk that filled up mid-line
            os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            except OSError:
                pass  # every line was written; a failing flush to disk is reported by the OS, not fixable here
            os.close(self._fd)
            self._fd = -1
