"""The machine the benchmark runs on: what it is, and how busy its GPU keeps during a loop."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import threading

import torch
import torchvision


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as stream:
            for line in stream:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, object]:
    from features.compute.encoder import cpu_has_native_bf16

    info: dict[str, object] = {
        "device": str(device),
        "device_name": cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info["device_name"] = properties.name
        info["gpu_memory_gib"] = round(properties.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so a timer stops when the device does, not the host."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class GpuSampler:
    """Samples GPU utilisation (NVML via torch, else nvidia-smi) in a thread; CUDA only."""

    def __init__(self, device: torch.device, interval: float = 0.1) -> None:
        self.device = device
        self.interval = interval
        self.samples: list[float] = []
        self.source = "n/a"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> float | None:
        if self.source == "torch.cuda.utilization":
            return float(torch.cuda.utilization(self.device))
        index = self.device.index or 0
        output = subprocess.run(
            [
                "nvidia-smi",
                f"--id={index}",
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
        return float(output.strip().splitlines()[0])

    def __enter__(self) -> GpuSampler:
        if self.device.type != "cuda":
            return self
        for source in ("torch.cuda.utilization", "nvidia-smi"):
            self.source = source
            try:
                self._read()
                break
            except Exception:  # no NVML binding, no nvidia-smi: report n/a
                self.source = "n/a"
        if self.source != "n/a":
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                value = self._read()
            except Exception:  # a missed sample is no error
                continue
            if value is not None:
                self.samples.append(value)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict[str, object] | str:
        if not self.samples:
            return "n/a"
        return {
            "mean_percent": round(statistics.fmean(self.samples), 1),
            "median_percent": round(statistics.median(self.samples), 1),
            "samples": len(self.samples),
            "source": self.source,
        }
