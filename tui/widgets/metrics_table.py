"""MetricsTable: every metric's latest value and its best so far, with the epoch it came at."""

from __future__ import annotations

from rich.text import Text
from scorch_tui.formatting import value
from scorch_tui.model import RunModel
from textual.widgets import DataTable


class MetricsTable(DataTable):
    """Rows update in place (no clearing, no cursor jumps); the monitored metric is starred."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, show_cursor=False, **kwargs)  # type: ignore[arg-type]
        self.border_title = "metrics"
        self._rows: list[str] = []
        self._version = -1

    def on_mount(self) -> None:
        self.add_column("metric", key="metric")
        self.add_column("last", key="last")
        self.add_column("best", key="best")
        self.add_column("epoch", key="epoch")

    def show(self, model: RunModel) -> None:
        if model.version == self._version:
            return
        self._version = model.version
        rows: list[tuple[str, Text, str, str, str]] = []
        loss = model.epoch_train_loss
        if loss.train.count:
            rows.append(("train-loss", Text("  train loss"), value(loss.last_train), value(loss.best_train),
                         str(loss.best_train_epoch or "-")))
        starred = (model.monitor, model.main_alias)
        for name, track in sorted(model.metrics.items(), key=lambda kv: (kv[0] not in starred, kv[0])):
            if name == "main" and model.main_alias:
                continue
            label = Text(("★ " if name in starred else "  ") + name)
            best = track
            if name in starred:
                label.stylize("bold")
                best = model.metrics.get(model.monitor, track)
            if track.valid.count:
                rows.append((name, label, value(track.last), value(best.best), str(best.best_epoch or "-")))
            if track.train.count:
                rows.append((f"{name}-train", Text(f"  {name} (train)"), value(track.last_train),
                             value(track.best_train), str(track.best_train_epoch or "-")))
        for key, label, last, best, at in rows:
            if key in self._rows:
                self.update_cell(key, "metric", label)
                self.update_cell(key, "last", last)
                self.update_cell(key, "best", best)
                self.update_cell(key, "epoch", at)
            else:
                self.add_row(label, last, best, at, key=key)
                self._rows.append(key)

