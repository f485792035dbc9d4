"""TensorBoard files (tensorboardX): losses, metrics, learning rate, and Socket.process output.

Run under `Guarded`: a failure here (no Pillow for images, a full disk) is told once and the run goes on.
tensorboardX writes on a thread fed through a queue of 10 whose put() blocks, and its close() and atexit
hook wait for that thread: so a dead thread is checked for before each write, a full disk is found by a
flush once an epoch, and a failed writer is let go without waiting for it.
"""

from __future__ import annotations

from typing import Any

from scorch.callbacks import Callback
from scorch.telemetry.protocol import EpochEnd, Event, Step
from scorch.user_code import check_processed


class TensorBoardLog(Callback):
    def __init__(self, folder: str) -> None:
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=folder, flush_secs=10)

    def _event_writer(self) -> Any:
        """tensorboardX's EventFileWriter (its thread, queue and file), or None where its layout differs."""
        event_writer = getattr(self.writer.file_writer, "event_writer", None)
        return event_writer if hasattr(event_writer, "_worker") and hasattr(event_writer, "_event_queue") else None

    def _check_writer(self) -> None:
        event_writer = self._event_writer()
        if event_writer is not None and event_writer._worker is not None and not event_writer._worker.is_alive():
            raise OSError(f"tensorboardX's writer thread for {self.writer.logdir} has stopped (is the disk full?)")

    def event(self, event: Event) -> None:
        if isinstance(event, Step):
            self._check_writer()
            self.writer.add_scalar("train/loss_step", event.loss, event.step)
            self.writer.add_scalar("train/lr", event.lr, event.step)  # per step: per-step schedules show their shape
            if event.grad_norm is not None:
                self.writer.add_scalar("train/grad_norm", event.grad_norm, event.step)
            for name, value in event.scalars.items():
                self.writer.add_scalar(f"train/{name}_step", value, event.step)
        elif isinstance(event, EpochEnd):
            self._check_writer()
            epoch = event.epoch + 1
            self.writer.add_scalar("train/loss", event.train_loss, epoch)
            for name, value in event.metrics.items():
                self.writer.add_scalar(f"valid/{name}", value, epoch)
            for name, value in event.train_metrics.items():
                self.writer.add_scalar(f"train/{name}", value, epoch)
            self.writer.flush()  # a full disk shows here, in the loop's thread, while the failure can still be told

    def processed(self, epoch: int, batch: int, result: Any) -> None:
        """Socket.process returns {"images": {tag: CHW/HW tensor}, "texts": {tag: str}, "scalars": {tag: number}}."""
        if not result:
            return
        check_processed(result, "")
        self._check_writer()
        for tag, image in (result.get("images") or {}).items():
            image = image.detach().cpu() if hasattr(image, "detach") else image
            dataformats = "HW" if image.ndim == 2 else "CHW"
            self.writer.add_image(f"test/{tag}/{batch}", image, epoch + 1, dataformats=dataformats)
        for tag, text in (result.get("texts") or {}).items():
            self.writer.add_text(f"test/{tag}/{batch}", str(text), epoch + 1)
        for tag, value in (result.get("scalars") or {}).items():
            self.writer.add_scalar(f"test/{tag}", float(value), epoch + 1)

    def close(self) -> None:
        try:
            self._check_writer()
            self.writer.close()
        except Exception:
            self._let_go()
            raise

    def _let_go(self) -> None:
        """Stop tensorboardX's writer without waiting on a dead thread or a full queue; what it wrote stays."""
        event_writer = self._event_writer()
        if event_writer is None or event_writer._closed:
            return
        event_writer._closed = True  # its atexit hook then does nothing
        worker, queue = event_writer._worker, event_writer._event_queue
        if worker is not None and worker.is_alive():
            worker.stop()  # alive, it drains the queue: the stop signal gets in
        queue.cancel_join_thread()
        queue.close()
        try:
            event_writer._ev_writer.close()  # the file is closed even when its last flush fails
        except OSError:
            pass
