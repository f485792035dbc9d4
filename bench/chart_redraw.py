"""What one chart redraw costs as a series grows: 1e3 to 1e6 points, each way a chart can be read.

    python bench/chart_redraw.py                 # 120x17 chart cells, 1e3 / 1e4 / 1e5 / 1e6 points, 20 redraws each
    python bench/chart_redraw.py --width 200 --height 37 --redraws 50

A redraw must cost the same at a million steps as at a thousand (issue 15: log
scale, smoothing and zoom must not make it O(points)). Each row times
`render_chart` (median of the redraws) for one view. A series keeps at most
2048 buckets, so from about 1e5 points on a redraw's work no longer grows: the
ratio column divides the largest size by the one before (10x the points), and
the `control` row times the same redraw twice, so its ratio (ideally 1.00) is
the run's noise: only a ratio well beyond it is a cost that grows with the
points. Smaller series are cheaper still (fewer buckets, a thinner envelope).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

from scorch_tui.series import MinMaxSeries
from scorch_tui.widgets.line_chart import ChartView, Line, render_chart

VIEWS = {
    "linear": ChartView(scale="linear"),
    "auto (log)": ChartView(),
    "ema 0.9": ChartView(smoothing=0.9),
    "window 1000": ChartView(window=1000),
    "time": ChartView(axis="time"),
    "all": ChartView(smoothing=0.9, axis="time", window=1000),
}


def loss_series(n: int) -> MinMaxSeries:
    """A loss falling over two decades with noise and one spike, a point a step, a step every 0.1 s."""
    series = MinMaxSeries()
    for i in range(n):
        y = 2.3 * (0.01 ** (i / n)) * (1 + 0.2 * math.sin(i * 0.7)) + (40.0 if i == n // 3 else 0.0)
        series.append(i, y, 1.7e9 + i / 10)
    return series


def redraw_ms(series: MinMaxSeries, view: ChartView, width: int, height: int, redraws: int) -> float:
    lines = [Line("train", series, "blue")]
    window = float(view.window) if view.window is not None else None
    times = []
    for _ in range(redraws):
        start = time.perf_counter()
        render_chart(lines, width, height, "step", view, window, 1.7e9)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=120)
    parser.add_argument("--height", type=int, default=17)
    parser.add_argument("--redraws", type=int, default=20)
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    series = {n: loss_series(n) for n in sizes}
    print(f"chart {args.width}x{args.height} cells, median of {args.redraws} redraws (ms); "
          f"ratio: {sizes[-1]:,} points to {sizes[-2]:,}")
    print(f"{'view':<12}" + "".join(f"{n:>12,}" for n in sizes) + f"{'ratio':>8}")
    for name, view in VIEWS.items():
        ms = [redraw_ms(series[n], view, args.width, args.height, args.redraws) for n in sizes]
        print(f"{name:<12}" + "".join(f"{m:>12.2f}" for m in ms) + f"{ms[-1] / ms[-2]:>8.2f}")
    first = redraw_ms(series[sizes[-1]], VIEWS["linear"], args.width, args.height, args.redraws)
    again = redraw_ms(series[sizes[-1]], VIEWS["linear"], args.width, args.height, args.redraws)
    print(f"{'control':<12}" + " " * 12 * (len(sizes) - 2) + f"{first:>12.2f}{again:>12.2f}{again / first:>8.2f}")


if __name__ == "__main__":
    main()
