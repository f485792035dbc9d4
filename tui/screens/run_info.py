"""RunInfoScreen (key i): what the run is: its settings, where and when it runs, each host's CPU and RAM.

Everything comes from what the run records (run.json, run_started, system events); nothing is guessed.
The optimizer and the learning-rate schedule live in the model file's Socket and are not recorded, so the
screen shows the learning rate the run reports, not an optimizer name.
"""

from __future__ import annotations

import time

from rich.table import Table
from rich.text import Text
from scorch_tui.formatting import duration, size, value
from scorch_tui.model import RunModel
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

LABEL = 14  # the labels' column, gap included
# Settings shown in the sections above; the rest of the config is listed after them, as recorded.
SHOWN = {"model", "dataset", "dataset_path", "epochs", "batch_size", "accumulate", "amp", "seed", "workers",
         "monitor", "mode", "early_stop_patience", "min_delta", "dump_period", "keep", "run_dir", "clip_grad_norm",
         "clip_grad_value", "device", "backend"}


def clock(seconds: float | None) -> str:
    """A wall-clock time on this machine's clock and zone: 2024-10-27 03:33:20 UTC."""
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(seconds))


def info_text(model: RunModel) -> Table:
    """The screen's text: the run, its training settings, its hosts, then every other recorded setting.
    Two columns, so a long value wraps under itself and the labels stay in theirs."""
    cfg = model.config
    text = Table.grid(padding=(0, 2))
    text.add_column(style="bold", no_wrap=True, min_width=LABEL - 2)
    text.add_column(ratio=1, overflow="fold")  # a long path folds onto the next line, whole

    def row(label: str, *parts: str) -> None:
        shown = [p for p in parts if p]
        if shown:
            text.add_row(label, "  ".join(shown))

    def section(title: str) -> None:
        if text.row_count:
            text.add_row("", "")
        text.add_row(Text(title, style="bold underline"), "")

    section("run")
    row("name", model.name or "(unnamed run)")
    row("folder", model.run_dir or str(cfg.get("run_dir") or ""))
    row("state", model.state.replace("_", " ") + (f" (view {model.liveness().replace('_', ' ')})" if model.connection else ""))
    row("started", clock(model.started))
    if model.ended is not None and model.state != "running":
        row("ended", clock(model.ended), f"after {duration(model.elapsed())}")
    row("resumed from", model.resumed_from)
    hosts = ", ".join(dict.fromkeys(model.hosts))
    row("ranks", f"{model.world_size} on {hosts}" if hosts else str(model.world_size), model.device, model.backend,
        f"pid {model.pid}" if model.pid else "")
    row("watched", f"via {model.via}" if model.via else "directly")

    section("training")
    row("model", model.model_file or str(cfg.get("model") or ""))
    row("dataset", model.dataset_file or str(cfg.get("dataset") or ""), str(cfg.get("dataset_path") or ""))
    total = model.batch_size * max(1, model.world_size) * int(cfg.get("accumulate") or 1)
    row("epochs", str(model.epochs or "?"), f"batch {model.batch_size} per rank ({total} a step in all)" if model.batch_size else "",
        f"accumulate {cfg['accumulate']}" if int(cfg.get("accumulate") or 1) > 1 else "")
    row("lr now", value(model.lr), f"amp {cfg.get('amp')}" if cfg.get("amp") not in (None, "off") else "amp off",
        _clip(cfg))
    patience = int(cfg.get("early_stop_patience") or 0)
    row("monitor", f"{model.monitor} ({'higher' if model.mode == 'max' else 'lower'} is better)",
        f"early stop after {patience} epochs without improvement" if patience else "no early stopping")
    row("checkpoints", f"every {cfg.get('dump_period') or 1} epoch(s)", f"keep {cfg['keep']}" if cfg.get("keep") else "")
    row("seed", str(cfg.get("seed", "")), f"workers {cfg['workers']}" if "workers" in cfg else "")

    section("hosts")
    usage = model.host_usage()
    text.add_row("", Text("the whole machine: the run's processes and all else on it" if usage else "no system figures yet",
                          style="dim"))
    for host in usage:
        ram = f"ram {size(host.ram)}" + (f" of {size(host.ram_total)}" if host.ram_total else "") if host.ram is not None else ""
        row(host.host, f"cpu {host.cpu:.0f}%" if host.cpu is not None else "cpu -", ram,
            f"rank{'s' if len(host.ranks) > 1 else ''} {', '.join(map(str, host.ranks))}")

    rest = {k: v for k, v in sorted(cfg.items()) if k not in SHOWN}
    if rest:
        section("settings")
        for key, setting in rest.items():
            row(key, repr(setting) if isinstance(setting, str) else str(setting))
    return text


def _clip(cfg: dict) -> str:
    if cfg.get("clip_grad_norm"):
        return f"clip grad norm {cfg['clip_grad_norm']}"
    if cfg.get("clip_grad_value"):
        return f"clip grad value {cfg['clip_grad_value']}"
    return ""


class RunInfoScreen(ModalScreen[None]):
    """Over the run view; i, esc or enter closes it, the arrows scroll it."""

    BINDINGS = [Binding("escape,i,enter", "close", "close")]

    def __init__(self, model: RunModel) -> None:
        super().__init__()
        self.model = model

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="info-box", classes="dialog"):
            yield Static(info_text(self.model), id="info-text")

    def on_mount(self) -> None:
        box = self.query_one("#info-box")
        box.border_title = "run info"
        box.border_subtitle = "i or esc closes"
        box.focus()

    def action_close(self) -> None:
        self.dismiss(None)
