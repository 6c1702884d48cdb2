"""The notebook loop (ImageFolder, PIL transforms, fp32, batch 20), timed in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.extract import REPO
from bench.extract.data import BenchImages
from bench.extract.machine import GpuSampler

NAIVE_BATCH = 20


def weights_file(config) -> str | None:
    """The state-dict file the naive loop loads, or None for random weights."""
    from features.compute.backbones import get_backbone
    from features.compute.weights import _checkpoint_dir

    if config.weights == "random":
        return None
    if config.weights == "imagenet":
        return str(_checkpoint_dir() / get_backbone(config.backbone).imagenet.filename)
    return str(Path(config.weights).expanduser())


def naive_child(spec_path: Path) -> None:
    """The notebook loop, run in its own process; writes its timing and codes back."""
    from torch import nn
    from torch.utils.data import DataLoader
    from torchvision import models
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    spec = json.loads(spec_path.read_text())
    device = torch.device(spec["device"])
    if device.type == "cuda":  # a notebook has its CUDA context long before the loop
        torch.zeros(1, device=device)
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    transform = T.Compose(
        [
            T.Resize(spec["resize"]),
            T.CenterCrop(spec["crop"]),
            T.ToTensor(),
            T.Normalize(spec["mean"], spec["std"]),
        ]
    )
    dataset = ImageFolder(spec["root"], transform=transform)
    loader = DataLoader(dataset, batch_size=NAIVE_BATCH, shuffle=False, num_workers=0)
    torch.manual_seed(spec["seed"])  # the same random weights build_extractor makes
    vgg = models.vgg16(weights=None)
    if spec["weights_file"] is not None:
        vgg.load_state_dict(torch.load(spec["weights_file"], map_location="cpu", weights_only=True))
    model = nn.Sequential(
        vgg.features, vgg.avgpool, nn.Flatten(), vgg.classifier[0], vgg.classifier[1]
    )
    model = model.eval().to(device)
    codes = []
    with torch.no_grad():
        for images, _ in loader:
            codes.append(model(images.to(device)).cpu())
    seconds = time.perf_counter() - started
    keep = set(spec["keep"])
    rows = [i for i, (path, _) in enumerate(dataset.samples) if Path(path).name in keep]
    kept = torch.cat(codes)[rows].numpy() if rows else np.empty((0, 4096), np.float32)
    np.save(spec["codes"], kept)
    names = [Path(dataset.samples[i][0]).name for i in rows]
    Path(spec["result"]).write_text(
        json.dumps({"seconds": seconds, "images": len(dataset), "names": names})
    )


def run_naive(
    images: BenchImages,
    device: torch.device,
    work: Path,
    round_number: int,
    keep: list[str],
    weights: str | None,
) -> dict[str, object]:
    from features.data.preprocess import Preprocessing

    preprocessing = Preprocessing()
    spec = {
        "root": str(images.root),
        "device": str(device),
        "resize": preprocessing.resize,
        "crop": preprocessing.crop,
        "mean": list(preprocessing.mean),
        "std": list(preprocessing.std),
        "seed": 0,
        "weights_file": weights,
        "keep": keep,
        "codes": str(work / f"naive_codes_{round_number}.npy"),
        "result": str(work / f"naive_result_{round_number}.json"),
    }
    spec_path = work / f"naive_spec_{round_number}.json"
    spec_path.write_text(json.dumps(spec))
    # The child imports bench.extract whatever its working directory: the checkout goes first.
    path = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))
    with GpuSampler(device) as sampler:
        subprocess.run(
            [sys.executable, "-m", "bench.extract", "--naive-child", str(spec_path)],
            check=True,
            env={**os.environ, "PYTHONPATH": path},
        )
    result = json.loads(Path(spec["result"]).read_text())
    result["codes_path"] = spec["codes"]
    result["gpu_utilisation"] = sampler.summary()
    return result
