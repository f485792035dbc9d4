"""TensorBoard files (tensorboardX): losses, metrics, learning rate, and Socket.process output."""

from __future__ import annotations

from typing import Any

from scorch.callbacks import Callback
from scorch.telemetry.protocol import EpochEnd, Event, Step
from scorch.user_code import check_processed


class TensorBoardLog(Callback):
    def __init__(self, folder: str) -> None:
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=folder, flush_secs=10)

    def event(self, event: Event) -> None:
        if isinstance(event, Step):
            self.writer.add_scalar("train/loss_step", event.loss, event.step)
            self.writer.add_scalar("train/lr", event.lr, event.step)  # per step: per-step schedules show their shape
            if event.grad_norm is not None:
                self.writer.add_scalar("train/grad_norm", event.grad_norm, event.step)
            for name, value in event.scalars.items():
                self.writer.add_scalar(f"train/{name}_step", value, event.step)
        elif isinstance(event, EpochEnd):
            epoch = event.epoch + 1
            self.writer.add_scalar("train/loss", event.train_loss, epoch)
            for name, value in event.metrics.items():
                self.writer.add_scalar(f"valid/{name}", value, epoch)
            for name, value in event.train_metrics.items():
                self.writer.add_scalar(f"train/{name}", value, epoch)

    def processed(self, epoch: int, batch: int, result: Any) -> None:
        """Socket.process returns {"images": {tag: CHW/HW tensor}, "texts": {tag: str}, "scalars": {tag: number}}."""
        if not result:
            return
        check_processed(result, "")
        for tag, image in (result.get("images") or {}).items():
            image = image.detach().cpu() if hasattr(image, "detach") else image
            dataformats = "HW" if image.ndim == 2 else "CHW"
            self.writer.add_image(f"test/{tag}/{batch}", image, epoch + 1, dataformats=dataformats)
        for tag, text in (result.get("texts") or {}).items():
            self.writer.add_text(f"test/{tag}/{batch}", str(text), epoch + 1)
        for tag, value in (result.get("scalars") or {}).items():
            self.writer.add_scalar(f"test/{tag}", float(value), epoch + 1)

    def close(self) -> None:
        self.writer.close()
