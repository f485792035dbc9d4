"""Resource use of this rank: process and host CPU/RAM (psutil), each visible NVIDIA GPU (NVML). No torch.

NVML comes from the nvidia-ml-py distribution, imported as `pynvml` (the PyPI
package named `pynvml` is a deprecated wrapper: do not depend on it). No
library, no driver or no GPU all mean the same thing here: an empty GPU list,
quietly. A figure a GPU does not report (power on many consumer cards) is
left out of its entry rather than faked.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import psutil


def _load_nvml() -> Any:
    try:
        import pynvml  # provided by nvidia-ml-py
    except ImportError:
        return None
    return pynvml


class SystemSampler:
    """Samples this process and host; `sample()` is one entry of `System.ranks`.

    Build it once per rank: CPU percentages are measured between two calls, and
    the NVML handles are opened once.
    """

    def __init__(self, rank: int = 0, nvml: Any = None) -> None:
        self.rank = rank
        self.host = socket.gethostname()
        self.process = psutil.Process()
        self.process.cpu_percent(None)  # the first call only starts the interval
        psutil.cpu_percent(None)
        self.ram_total = psutil.virtual_memory().total
        self._nvml = nvml if nvml is not None else _load_nvml()
        self._gpus: list[tuple[int, Any]] = []  # (index as the job sees it, NVML handle)
        if self._nvml is not None:
            self._gpus = self._open_gpus()

    def _open_gpus(self) -> list[tuple[int, Any]]:
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except Exception:  # noqa: BLE001 - no driver or library: no GPUs, quietly
            self._nvml = None
            return []
        try:
            count = nvml.nvmlDeviceGetCount()
            visible = _visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"), count)
            handles = []
            for index, device in enumerate(visible):
                if isinstance(device, int):
                    handles.append((index, nvml.nvmlDeviceGetHandleByIndex(device)))
                else:
                    handles.append((index, nvml.nvmlDeviceGetHandleByUUID(device)))
            return handles
        except Exception:  # noqa: BLE001 - a half-working driver is treated as none
            self.close()
            return []

    @property
    def gpu_count(self) -> int:
        return len(self._gpus)

    def sample(self, step_time: float | None = None, data_time: float | None = None) -> dict:
        """One `System.ranks` entry: rank, host, cpu, ram, ram_total, host_cpu, host_ram, gpus, and
        step_time/data_time when given."""
        entry: dict[str, Any] = {"rank": self.rank, "host": self.host}
        try:
            entry["cpu"] = self.process.cpu_percent(None)
            entry["ram"] = self.process.memory_info().rss
        except psutil.Error:
            pass
        entry["ram_total"] = self.ram_total
        entry["host_cpu"] = psutil.cpu_percent(None)
        entry["host_ram"] = psutil.virtual_memory().used
        if step_time is not None:
            entry["step_time"] = float(step_time)
        if data_time is not None:
            entry["data_time"] = float(data_time)
        entry["gpus"] = [self._gpu(index, handle) for index, handle in self._gpus]
        return entry

    def _gpu(self, index: int, handle: Any) -> dict:
        nvml = self._nvml
        gpu: dict[str, Any] = {"index": index}
        readers = {
            "name": lambda: _text(nvml.nvmlDeviceGetName(handle)),
            "util": lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
            "mem_used": lambda: int(nvml.nvmlDeviceGetMemoryInfo(handle).used),
            "mem_total": lambda: int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
            "temp": lambda: float(nvml.nvmlDeviceGetTemperature(handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))),
            "power": lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,  # milliwatts -> watts
        }
        for key, read in readers.items():
            try:
                gpu[key] = read()
            except Exception:  # noqa: BLE001 - a figure this GPU does not report is left out
                pass
        return gpu

    def close(self) -> None:
        """Release NVML; safe to call twice."""
        nvml, self._nvml, self._gpus = self._nvml, None, []
        if nvml is not None:
            try:
                nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass


def _visible_devices(env: str | None, count: int) -> list[int | str]:
    """NVML devices the job may use, in CUDA_VISIBLE_DEVICES order (indices or GPU UUIDs)."""
    if env is None:
        return list(range(count))
    devices: list[int | str] = []
    for part in env.split(","):
        part = part.strip()
        if not part:
            break
        if part.isdigit():
            if int(part) >= count:
                break  # CUDA stops at the first invalid entry, and so do we
            devices.append(int(part))
        elif part.startswith(("GPU-", "MIG-")):
            devices.append(part)
        else:
            break
    return devices


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
