"""ChartGrid: the loss chart, then one chart per metric, two or three to a row; scrolls when there are more."""

from __future__ import annotations

from scorch_tui.model import RunModel
from scorch_tui.widgets.line_chart import Line, LineChart
from textual.containers import ScrollableContainer

TRAIN_COLOR = "#5fafff"
VALID_COLOR = "#ffaf5f"


class ChartGrid(ScrollableContainer, can_focus=True):
    """Charts appear as metrics first arrive; arrow keys scroll to the ones below."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._charts: dict[str, LineChart] = {}
        self.border_title = "charts"

    def show(self, model: RunModel) -> None:
        """Make sure every chart exists, then redraw those whose data moved."""
        wanted: list[tuple[str, str, str, list[Line]]] = [
            ("loss", "loss", "step", [Line("train", model.train_loss, TRAIN_COLOR),
                                     Line("valid", model.valid_loss, VALID_COLOR)])]
        for track in model.chart_metrics():
            lines = [Line("valid", track.valid, VALID_COLOR)]
            if track.train.count:
                lines.insert(0, Line("train", track.train, TRAIN_COLOR))
            wanted.append((f"metric-{track.name}", model.metric_label(track.name), "epoch", lines))
        for key, title, x_label, lines in wanted:
            chart = self._charts.get(key)
            if chart is None:
                chart = self._charts[key] = LineChart(title, x_label, classes="chart")
                self.mount(chart)
                chart.plot(lines)
            else:
                chart.rename(title)
                if [(line.label, id(line.series)) for line in chart.lines] != [(line.label, id(line.series)) for line in lines]:
                    chart.plot(lines)
                else:
                    chart.update_chart()

    @property
    def charts(self) -> dict[str, LineChart]:
        return dict(self._charts)
