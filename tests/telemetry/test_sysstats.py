"""System sampling with a fake NVML layer injected where `import pynvml` looks (nvidia-ml-py's module)."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pytest

from scorch.telemetry.protocol import System, decode
from scorch.telemetry.sysstats import SystemSampler, _visible_devices


class NVMLError(Exception):
    pass


def fake_nvml(gpus: list[dict], fail_init: bool = False) -> types.ModuleType:
    """A stand-in for nvidia-ml-py's pynvml with `gpus` attached; a figure set to None raises like NVML does."""
    nvml = types.ModuleType("pynvml")
    nvml.NVMLError = NVMLError
    nvml.NVML_TEMPERATURE_GPU = 0
    nvml.calls = []

    def init():
        nvml.calls.append("init")
        if fail_init:
            raise NVMLError("NVML Shared Library Not Found")

    def figure(handle, key):
        value = gpus[handle][key]
        if value is None:
            raise NVMLError("Not Supported")
        return value

    nvml.nvmlInit = init
    nvml.nvmlShutdown = lambda: nvml.calls.append("shutdown")
    nvml.nvmlDeviceGetCount = lambda: len(gpus)
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i
    nvml.nvmlDeviceGetHandleByUUID = lambda uuid: next(i for i, g in enumerate(gpus) if g["uuid"] == uuid)
    nvml.nvmlDeviceGetName = lambda h: figure(h, "name")
    nvml.nvmlDeviceGetUtilizationRates = lambda h: SimpleNamespace(gpu=figure(h, "util"), memory=0)
    nvml.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(used=figure(h, "used"), total=figure(h, "total"))
    nvml.nvmlDeviceGetTemperature = lambda h, sensor: figure(h, "temp")
    nvml.nvmlDeviceGetPowerUsage = lambda h: figure(h, "power_mw")
    return nvml


GPUS = [
    {"uuid": "GPU-aaa", "name": b"Tesla V100", "util": 87, "used": 4 << 30, "total": 16 << 30, "temp": 61, "power_mw": 215_000},
    {"uuid": "GPU-bbb", "name": "GeForce GTX 1080", "util": 3, "used": 1 << 30, "total": 8 << 30, "temp": 40, "power_mw": None},
]


def test_each_visible_gpu_is_reported_and_unsupported_figures_are_left_out(monkeypatch):
    # GIVEN two GPUs behind NVML, the second without a power sensor
    nvml = fake_nvml(GPUS)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    sampler = SystemSampler(rank=3)
    # WHEN one sample is taken
    entry = sampler.sample(step_time=0.12, data_time=0.01)
    sampler.close()
    # THEN it is one System.ranks entry with this process, the host and both GPUs in the documented units
    assert entry["rank"] == 3 and entry["host"] and entry["step_time"] == 0.12 and entry["data_time"] == 0.01
    assert entry["ram"] > 0 and entry["ram_total"] >= entry["ram"] and 0 <= entry["host_cpu"] <= 100
    assert entry["gpus"][0] == {"index": 0, "name": "Tesla V100", "util": 87.0, "mem_used": 4 << 30,
                                "mem_total": 16 << 30, "temp": 61.0, "power": 215.0}
    assert "power" not in entry["gpus"][1] and entry["gpus"][1]["name"] == "GeForce GTX 1080"
    assert nvml.calls == ["init", "shutdown"]
    # AND it travels as a system event
    assert decode(System(ranks=[entry]).to_json()).ranks == [entry]


def test_cuda_visible_devices_picks_and_orders_the_gpus(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(GPUS))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbb")
    entry = SystemSampler().sample()
    assert [(g["index"], g["name"]) for g in entry["gpus"]] == [(0, "GeForce GTX 1080")]
    assert _visible_devices("1,0", 2) == [1, 0]
    assert _visible_devices("0,7,1", 2) == [0]  # CUDA stops at the first invalid entry
    assert _visible_devices("-1", 2) == [] and _visible_devices("", 2) == []


@pytest.mark.parametrize("nvml", [None, "no-driver"], ids=["nvidia-ml-py missing", "no driver"])
def test_no_library_or_no_driver_means_no_gpus_quietly(monkeypatch, nvml):
    # GIVEN no NVML module at all, or one whose init fails as it does without a driver
    monkeypatch.setitem(sys.modules, "pynvml", None if nvml is None else fake_nvml(GPUS, fail_init=True))
    # WHEN sampling
    sampler = SystemSampler()
    entry = sampler.sample()
    sampler.close()
    # THEN there are simply no GPUs
    assert entry["gpus"] == [] and sampler.gpu_count == 0 and "cpu" in entry


def test_the_real_nvml_path_never_raises():
    # GIVEN whatever this machine has (here usually no NVIDIA driver)
    sampler = SystemSampler()
    entry = sampler.sample()
    sampler.close()
    sampler.close()
    assert isinstance(entry["gpus"], list) and entry["ram"] > 0
