"""How numbers, durations and states read on screen: short, aligned, the same everywhere."""

from __future__ import annotations

import math

from rich.text import Text

# Connection and run states: the label shown and its colours (always with a word, never colour alone).
STATE_STYLES = {
    "connecting": ("CONNECTING", "bold black on yellow"),
    "live": ("LIVE", "bold black on green"),
    "reconnecting": ("RECONNECTING", "bold black on yellow"),
    "ended": ("ENDED", "bold white on blue"),
    "replay": ("REPLAY", "bold white on blue"),
    "following": ("FOLLOWING", "bold black on cyan"),
    "error": ("ERROR", "bold white on red"),
    "running": ("RUNNING", "bold green"),
    "completed": ("COMPLETED", "bold green"),
    "stopped": ("STOPPED", "bold yellow"),
    "early_stopped": ("EARLY STOPPED", "bold cyan"),
    "preempted": ("PREEMPTED", "bold magenta"),
    "failed": ("FAILED", "bold red"),
    "stalled": ("STALLED", "bold black on dark_orange"),
    "dead": ("DEAD", "bold white on red"),
    "tunnel_lost": ("TUNNEL LOST", "bold black on yellow"),
    "loading": ("LOADING", "bold white on blue"),
}

LEVEL_STYLES = {"info": "", "good": "green", "warning": "yellow", "error": "bold red"}

BLOCKS = " ▏▎▍▌▋▊▉█"


def state_label(state: str) -> Text:
    label, style = STATE_STYLES.get(state, (state.upper().replace("_", " "), "bold"))
    return Text(f" {label} " if " on " in style else label, style=style)


def duration(seconds: float | None) -> str:
    """00:12:03, 27:40:09 or 3d 04h: always a fixed shape, never a traceback for None/NaN."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--:--"
    seconds = int(seconds + 0.5)
    if seconds >= 100 * 3600:
        return f"{seconds // 86400}d {seconds % 86400 // 3600:02d}h"
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def value(number: float | None, digits: int = 4) -> str:
    if number is None:
        return "-"
    if not math.isfinite(number):
        return str(number)
    if number != 0 and (abs(number) >= 1e5 or abs(number) < 1e-3):
        return f"{number:.{max(1, digits - 2)}e}"
    return f"{number:.{digits}g}"


def size(n_bytes: float | None) -> str:
    """1.2G, 830M: RAM and GPU memory in four characters or so."""
    if n_bytes is None:
        return "-"
    n = float(n_bytes)
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1000 or unit == "T":
            return f"{n:.0f}{unit}" if unit in ("B", "K") or n >= 10 else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}T"


def rate(samples_per_second: float | None) -> str:
    if not samples_per_second:
        return "-"
    if samples_per_second >= 1e4:
        return f"{samples_per_second / 1e3:.0f}k"
    return f"{samples_per_second:.0f}" if samples_per_second >= 10 else f"{samples_per_second:.1f}"


def bar(fraction: float, width: int, style: str = "green", rest: str = "grey30") -> Text:
    """A progress bar of `width` cells with eighth-cell resolution (no flicker: same width always)."""
    width = max(1, width)
    fraction = min(1.0, max(0.0, fraction if math.isfinite(fraction) else 0.0))
    eighths = int(fraction * width * 8 + 0.5)
    full, part = divmod(eighths, 8)
    text = Text("█" * full, style=style)
    if full < width:
        text.append(BLOCKS[part] if part else " ", style=f"{style} on {rest}")
        text.append(" " * (width - full - 1), style=f"on {rest}")
    return text
