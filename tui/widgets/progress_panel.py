"""ProgressPanel: epoch and step progress bars, training loss, speed."""

from __future__ import annotations

from rich.text import Text
from scorch_tui.formatting import bar, rate, value
from scorch_tui.model import RunModel
from textual.widgets import Static

LABEL = 14  # "Epoch  12/100 " and "Step  120/500 " line up
# Phases of rank 0 (from the heartbeat) in which no training step comes, and what the step line says instead.
BETWEEN_STEPS = {"validating": "Validating", "testing": "Testing", "checkpointing": "Checkpointing"}


class ProgressPanel(Static):
    """Two lines; the figures are laid out first and the bars take the width left, so nothing wraps."""

    def show(self, model: RunModel) -> None:
        width = self.content_size.width or 78
        epochs = model.epochs or "?"
        shown_epoch = min(model.epoch + 1, model.epochs) if model.epochs else model.epoch + 1
        epoch_fraction = model.epoch_fraction()
        steps = model.steps_in_epoch
        step_fraction = min(1.0, model.epoch_step / steps) if steps else 0.0

        epoch_tail = Text(f" {epoch_fraction * 100:3.0f}%")
        epoch_tail.append("  loss ", style="dim")
        epoch_tail.append(value(model.loss))
        if model.lr is not None:
            epoch_tail.append("  lr ", style="dim")
            epoch_tail.append(value(model.lr, 2))
        if model.grad_norm is not None:
            epoch_tail.append("  gnorm ", style="dim")
            epoch_tail.append(value(model.grad_norm, 2))
        step_tail = Text(f" {step_fraction * 100:3.0f}%")
        between = model.phase in BETWEEN_STEPS
        if model.looks_live and not between:  # an ended, dead or stalled run has no speed to show
            step_tail.append(f"  {rate(model.samples_per_second())}")
            step_tail.append(" samples/s", style="dim")
            sps = model.steps_per_second()
            if sps:
                step_tail.append(f"  {value(sps, 3)}")
                step_tail.append(" it/s", style="dim")
        tail = max(epoch_tail.cell_len, step_tail.cell_len)
        bar_width = max(4, width - LABEL - tail)

        text = Text(no_wrap=True, overflow="crop")
        text.append(f"Epoch {shown_epoch:>3}/{epochs}".ljust(LABEL), style="bold")
        text.append_text(bar(epoch_fraction, bar_width, "green"))
        text.append_text(epoch_tail)
        text.append("\n")
        if between:  # between epochs rank 0 validates or saves: say so rather than "Step 0/23"
            text.append(BETWEEN_STEPS[model.phase].ljust(LABEL), style="bold yellow")
        else:
            text.append(f"Step {model.epoch_step:>4}/{steps or '?'}".ljust(LABEL), style="bold")
        text.append_text(bar(step_fraction, bar_width, "cyan"))
        text.append_text(step_tail)
        self.update(text)

    def on_resize(self) -> None:
        screen = self.screen
        model = getattr(screen, "model", None)
        if model is not None:
            self.show(model)
