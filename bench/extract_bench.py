"""Extraction benchmark: the notebook loop against our extractor, same run, same images.

Measured, each on the same JPEG files:

- **naive**: the loop every transfer-learning notebook has: ``ImageFolder`` and PIL
  transforms (Resize 256, CenterCrop 224, ToTensor, Normalize), batch size 20,
  ``num_workers=0``, fp32, VGG16 truncated by hand after fc6+ReLU, one ``.cpu()`` a batch,
  codes kept in a list. It runs in a fresh child process, as a notebook kernel would, so
  nothing our extractor tunes in this process (allocator, threads) helps or hurts it;
- **ours**: ``features.compute.extract.extract_codes`` end to end, JPEG files on disk to codes
  committed in a fresh feature store (decode workers, device normalisation, precision,
  channels_last, prefetch and committer threads, optional nvJPEG and torch.compile),
  model construction and store setup included, as they are in the naive timing;
- **model only**: our encoder on uint8 batches already in memory;
- **decode only**: our loader (and, with ``--gpu-decode``, the device decode path);
- **GPU utilisation** sampled during both loops (``n/a`` on CPU);
- **precision**: the codes' relative error against fp32 on the same pixels, and the
  change in accuracy of the logistic-regression head (the pipeline's ``logreg``) under
  5-fold cross-validation on the same folds.

Naive, ours and model-only alternate over ``--rounds`` (naive first, then last), so a
noisy shared machine hurts each alike. Weights are random (seed 0, identical in both
loops) unless ``--weights`` names real ones: speed does not depend on them, but the head
accuracies of random-weight codes say nothing about transfer learning.

    python bench/extract_bench.py --device cpu --limit 200          # make bench
    python bench/extract_bench.py --device cpu --limit 1000 --precision-only

    # GPU machine: carry a 100-per-class subset, build 20,000 distinct JPEGs there
    python bench/extract_bench.py --export-subset .benchdata/flowers --per-class 100
    python bench/extract_bench.py --device cuda --data .benchdata/flowers --replicate 40 \
        --gpu-decode
    python bench/extract_bench.py --device cuda --data .benchdata/flowers --replicate 40 \
        --gpu-decode --compile on --skip-naive --output bench/results/extract_cuda_compiled.json

Results go to ``bench/results/extract_<device>.json`` (and to ``$OUT`` when set). Imports
stay to torch, torchvision, numpy, h5py, Pillow and scikit-learn (no dask, no dvc), so
the script runs on a bare GPU machine from a plain checkout.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torchvision

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # a plain checkout on a GPU machine: nothing is installed
    sys.path.insert(0, str(REPO))

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "flower_photos"
RESULTS = REPO / "bench" / "results"
IMAGE_SUFFIXES = (".jpg", ".jpeg")
SPLIT_NAMES = ("train", "val", "test")
NAIVE_BATCH = 20
RANDOM_WEIGHTS_NOTE = (
    "RANDOM weights (torchvision initialisation, seed 0), the same in both loops: no "
    "pretrained weights can be downloaded on the benchmark machines. Speed does not depend "
    "on the weights; the head accuracies below are those of random-weight codes and say "
    "nothing about transfer learning, only whether the precision changes them."
)
TARGETS = {
    "cpu": {"speedup_vs_naive": 3.0},
    "cuda": {"end_to_end_images_per_s": 10_000, "speedup_vs_naive": 30.0, "model_only": 13_000},
}


def say(message: str = "") -> None:
    print(message, flush=True)


def say_run(run: dict[str, object]) -> None:
    say(f"  {run['images'] / run['seconds']:.1f} images/s ({run['seconds']:.1f} s)")


# --------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class Source:
    label: str
    path: Path


def list_images(root: Path) -> list[Source]:
    """``root/<class>/*.jpg`` or ``root/{train,val,test}/<class>/*.jpg``, sorted."""
    splits = [root / name for name in SPLIT_NAMES if (root / name).is_dir()]
    sources = []
    for base in splits or [root]:
        for folder in sorted(p for p in base.iterdir() if p.is_dir()):
            sources.extend(
                Source(folder.name, path)
                for path in sorted(folder.iterdir())
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
            )
    return sources


def select(sources: list[Source], limit: int | None) -> list[Source]:
    """``limit`` images spread evenly over each class (all of them without a limit)."""
    if limit is None or limit >= len(sources):
        return sources
    by_label: dict[str, list[Source]] = {}
    for source in sources:
        by_label.setdefault(source.label, []).append(source)
    labels = sorted(by_label)
    chosen = []
    for index, label in enumerate(labels):
        items = by_label[label]
        quota = min(len(items), limit // len(labels) + (index < limit % len(labels)))
        chosen.extend(items[int(i * len(items) / quota)] for i in range(quota))
    return chosen


def missing_data_message(path: Path) -> str:
    return (
        f"no JPEG images under {path}.\n"
        f"  Pass --data PATH: a folder of <class>/<image>.jpg, or of "
        f"{{train,val,test}}/<class>/<image>.jpg.\n"
        f"  The default is ../shared/datasets/flower_photos beside the repository.\n"
        f"  On a machine without it (a GPU machine gets only the repository), export a "
        f"subset here first:\n"
        f"    python bench/extract_bench.py --export-subset .benchdata/flowers --per-class 100\n"
        f"    echo /.benchdata/ >> .git/info/exclude\n"
        f"  then carry .benchdata along and run with --data .benchdata/flowers --replicate 40."
    )


def export_subset(sources: list[Source], dest: Path, per_class: int) -> int:
    """Copy ``per_class`` images per class (evenly spaced) to ``dest/<class>/``."""
    labels = {source.label for source in sources}
    chosen = select(sources, per_class * len(labels))
    for source in chosen:
        target = dest / source.label / source.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.path, target)
    return len(chosen)


def _replica(job: tuple[str, str, int]) -> int:
    """Re-encode one source image as variant ``copy``: other quality, maybe mirrored.

    Every variant has distinct bytes (its number is in a JPEG comment too), so the store,
    which deduplicates by content hash, computes every one of them.
    """
    from PIL import Image, ImageOps

    source, target, copy = job
    with Image.open(source) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        if (copy // 11) % 2:
            image = ImageOps.mirror(image)
        image.save(
            target,
            format="JPEG",
            quality=85 + copy % 11,
            comment=f"extract_bench replica {copy}".encode(),
        )
    return Path(target).stat().st_size


@dataclass
class BenchImages:
    root: Path  # <root>/<class>/<image>.jpg: what both loops read
    paths: list[Path]
    labels: list[str]
    original: list[bool]  # the selected source images themselves, not re-encoded copies
    build_seconds: float


def build_image_tree(chosen: list[Source], work: Path, replicate: int) -> BenchImages:
    """Link the chosen images under one folder; add ``replicate - 1`` re-encoded copies."""
    started = time.perf_counter()
    root = work / "images"
    paths, labels, original, jobs = [], [], [], []
    for number, source in enumerate(chosen):
        folder = root / source.label
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{number:06d}_{source.path.stem}"
        link = folder / f"{stem}{source.path.suffix.lower()}"
        link.symlink_to(source.path.resolve())
        paths.append(link)
        labels.append(source.label)
        original.append(True)
        for copy in range(1, replicate):
            target = folder / f"{stem}_r{copy:03d}.jpg"
            jobs.append((str(source.path), str(target), copy))
            paths.append(target)
            labels.append(source.label)
            original.append(False)
    if jobs:
        say(f"building {len(jobs)} re-encoded copies on {os.cpu_count()} processes ...")
        with multiprocessing.get_context("spawn").Pool(os.cpu_count()) as pool:
            for _ in pool.imap_unordered(_replica, jobs, chunksize=64):
                pass
    return BenchImages(root, paths, labels, original, time.perf_counter() - started)


def hash_files(paths: list[Path]) -> list[str]:
    """Content hashes, as ``prepare`` would record them (this also warms the page cache)."""

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    with concurrent.futures.ThreadPoolExecutor(min(32, (os.cpu_count() or 1) * 2)) as pool:
        return list(pool.map(digest, paths, chunksize=64))


def describe_images(images: BenchImages, sample: int = 400) -> dict[str, object]:
    from PIL import Image

    step = max(1, len(images.paths) // sample)
    sides = []
    for path in images.paths[::step]:
        with Image.open(path) as image:
            sides.append(max(image.size))
    sizes = [path.stat().st_size for path in images.paths]
    return {
        "images": len(images.paths),
        "classes": sorted(set(images.labels)),
        "bytes_total": int(sum(sizes)),
        "bytes_median": int(statistics.median(sizes)),
        "long_side_median_px": int(statistics.median(sides)),
    }


# --------------------------------------------------------------------------- machine


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


def build_model(config) -> torch.nn.Module:
    """The truncated backbone with the configured weights (random unless --weights says)."""
    from features.compute.backbones import build_extractor, get_backbone
    from features.compute.weights import resolve_weights

    spec = get_backbone(config.backbone)
    weights = resolve_weights(spec, config.weights, config.seed, config.weights_sha256)
    return build_extractor(spec, weights.state_dict, config.seed)


def weights_file(config) -> str | None:
    """The state-dict file the naive loop loads, or None for random weights."""
    from features.compute.backbones import get_backbone
    from features.compute.weights import _checkpoint_dir

    if config.weights == "random":
        return None
    if config.weights == "imagenet":
        return str(_checkpoint_dir() / get_backbone(config.backbone).imagenet.filename)
    return str(Path(config.weights).expanduser())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- naive loop


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
    with GpuSampler(device) as sampler:
        subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--naive-child", str(spec_path)],
            check=True,
        )
    result = json.loads(Path(spec["result"]).read_text())
    result["codes_path"] = spec["codes"]
    result["gpu_utilisation"] = sampler.summary()
    return result


# --------------------------------------------------------------------------- our stages


def run_ours(refs, config, limits, store: Path, device: torch.device) -> dict[str, object]:
    from features.compute.extract import extract_codes

    messages: list[str] = []
    with GpuSampler(device) as sampler:
        started = time.perf_counter()
        report = extract_codes(refs, store, config, limits, progress=False, log=messages.append)
        seconds = time.perf_counter() - started
    if report.computed + report.skipped != len({ref.sha256 for ref in refs}):
        raise RuntimeError(f"extract did not cover every image: {report.summary()}")
    return {
        "seconds": seconds,
        "images": report.computed,
        "skipped": report.skipped,
        "precision": report.precision,
        "random_weights": report.random_weights,
        "timings": {name: round(value, 3) for name, value in report.timings.items()},
        "steady_images_per_s": report.steady_images_per_second or None,  # None: one batch
        "gpu_utilisation": sampler.summary(),
    }


def measure_decode(refs, config, limits, device: torch.device, keep: set[str]):
    """Our loader alone (CPU workers), and the device decode path when asked for."""
    from features.compute.extract import _workers
    from features.compute.loader import make_loader
    from features.compute.prefetch import prefetch, prepare_batch

    workers = _workers(config, device)
    loader = make_loader(
        refs, config.preprocessing, limits, config.batch_size, workers, pin_memory=False
    )
    pixels: dict[str, torch.Tensor] = {}
    started = time.perf_counter()
    count = 0
    for batch in loader:
        count += len(batch.hashes)
        for sha, row in zip(batch.hashes, batch.pixels, strict=True):
            if sha in keep:
                pixels[sha] = row.clone()
    seconds = time.perf_counter() - started
    result: dict[str, object] = {
        "pil_loader": {
            "images_per_s": count / seconds,
            "seconds": seconds,
            "workers": workers,
            "what": "read + sha256 check + PIL decode (draft) + resize/crop to uint8, collated",
        }
    }
    if config.gpu_decode:
        loader = make_loader(
            refs,
            config.preprocessing,
            limits,
            config.batch_size,
            workers,
            pin_memory=device.type == "cuda",
            raw_jpeg=True,
        )

        def prepare(batch):
            return prepare_batch(batch, config.preprocessing, limits, device)

        prepare(next(iter(loader)))  # warm-up: nvJPEG handles, CUDA kernels
        _sync(device)
        started = time.perf_counter()
        count = 0
        for ready in prefetch(loader, prepare, device):
            count += len(ready.hashes)
        _sync(device)
        seconds = time.perf_counter() - started
        where = "" if device.type == "cuda" else " (extract uses it on CUDA only)"
        result["device_decoder"] = {
            "images_per_s": count / seconds,
            "seconds": seconds,
            "workers": workers,
            "what": f"workers read bytes; torchvision decode_jpeg on {device} + batched "
            f"resize/crop: the --gpu-decode path{where}",
        }
    return result, pixels


class ModelProbe:
    """Our encoder on uint8 batches already in host memory: the forward-pass ceiling.

    Built once (it compiles exactly when extract would for a run of ``images`` images)
    and timed once per round, so a busy spell on a shared machine shows as spread.
    """

    def __init__(self, config, device: torch.device, images: int) -> None:
        from features.compute.encoder import Encoder, cpu_allocator_tuned, resolve_precision
        from features.compute.extract import _compile_batch

        self.device = device
        self.batch_size = config.batch_size
        self.precision = resolve_precision(config.precision, device)
        self.compiled = _compile_batch(config, device, images) is not None
        self.encoder = Encoder(
            build_model(config),
            config.preprocessing,
            device,
            self.precision,
            config.dtype,
            config.channels_last,
            config.batch_size if self.compiled else None,
        )
        self.channels_last = config.channels_last
        crop = config.preprocessing.crop
        generator = torch.Generator().manual_seed(0)
        self.pixels = torch.randint(
            0, 256, (config.batch_size, 3, crop, crop), dtype=torch.uint8, generator=generator
        )
        if device.type == "cuda":
            self.pixels = self.pixels.pin_memory()
        self._tuned = lambda: cpu_allocator_tuned(device)
        started = time.perf_counter()
        with self._tuned():
            for _ in range(2):  # compile, cuDNN autotuning, allocator warm-up
                self.encoder(self.pixels).numpy()
        self.warm_up_seconds = time.perf_counter() - started
        self.rates: list[float] = []

    def measure(self, seconds: float) -> float:
        in_flight: list = []
        batches = 0
        with self._tuned():
            started = time.perf_counter()
            while batches < 2 or time.perf_counter() - started < seconds:
                in_flight.append(self.encoder(self.pixels))
                batches += 1
                if len(in_flight) > 4:  # keep the host at most a few batches ahead
                    in_flight.pop(0).numpy()
            for pending in in_flight:
                pending.numpy()
            _sync(self.device)
            elapsed = time.perf_counter() - started
        self.rates.append(batches * self.batch_size / elapsed)
        return self.rates[-1]

    def summary(self) -> dict[str, object]:
        return {
            "images_per_s": statistics.median(self.rates),
            "per_round": self.rates,
            "batch_size": self.batch_size,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compiled": self.compiled,
            "warm_up_seconds": self.warm_up_seconds,
            "what": "Encoder.__call__ on a uint8 batch in (pinned) host memory: copy to the "
            "device, normalise, forward, codes back to the host",
        }


def encode_all(pixels: torch.Tensor, config, device, precision: str) -> tuple[np.ndarray, float]:
    """Codes (float32, before storage rounding) and the seconds the forward passes took."""
    from features.compute.encoder import Encoder, cpu_allocator_tuned

    encoder = Encoder(
        build_model(config),
        config.preprocessing,
        device,
        precision,
        "float32",
        config.channels_last,
    )
    with cpu_allocator_tuned(device):
        encoder(pixels[:1]).numpy()  # first-call setup is not precision's cost
        started = time.perf_counter()
        blocks = [encoder(chunk).numpy().copy() for chunk in pixels.split(config.batch_size)]
        seconds = time.perf_counter() - started
    return np.concatenate(blocks), seconds


def head_accuracy(
    codes: np.ndarray, labels: list[str], as_stored: bool = True
) -> tuple[float, np.ndarray]:
    """The pipeline's logreg head, 5-fold stratified CV (fixed folds), on float16 codes."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from classifiers.heads import LogRegParams, make_logreg

    y = np.asarray(labels)
    folds = min(5, min(np.unique(y, return_counts=True)[1]))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    stored = codes.astype(np.float16).astype(np.float32) if as_stored else codes
    predicted = cross_val_predict(make_logreg(LogRegParams()), stored, y, cv=cv)
    return float((predicted == y).mean() * 100), predicted


def relative_error(codes: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    per_image = np.linalg.norm(codes - reference, axis=1) / np.maximum(
        np.linalg.norm(reference, axis=1), 1e-30
    )
    return {
        "overall": float(np.linalg.norm(codes - reference) / np.linalg.norm(reference)),
        "per_image_median": float(np.median(per_image)),
        "per_image_max": float(per_image.max()),
    }


def measure_precision(pixels, labels, config, device, candidates, naive_codes) -> dict[str, object]:
    say(f"precision: fp32 reference codes for {len(labels)} images ...")
    reference, reference_seconds = encode_all(pixels, config, device, "fp32")
    base_accuracy, base_predicted = head_accuracy(reference, labels)
    unrounded_accuracy, unrounded_predicted = head_accuracy(reference, labels, as_stored=False)
    result: dict[str, object] = {
        "images": len(labels),
        "head": "logreg (StandardScaler + LogisticRegression C=1, max_iter=2000), 5-fold "
        "stratified CV, shuffle seed 0, same folds for every precision, codes rounded to "
        "float16 as stored",
        "fp32": {"head_accuracy": base_accuracy, "seconds": reference_seconds},
        "noise_floor": {
            "what": "the same fp32 codes NOT rounded to float16 (relative change ~2e-4): how "
            "many predictions a perturbation far smaller than bf16's already flips",
            "head_accuracy": unrounded_accuracy,
            "accuracy_change_points": unrounded_accuracy - base_accuracy,
            "predictions_changed": int((unrounded_predicted != base_predicted).sum()),
        },
        "allowed_accuracy_change_points": 0.5,
    }
    for precision in candidates:
        say(f"precision: {precision} codes ...")
        codes, seconds = encode_all(pixels, config, device, precision)
        accuracy, predicted = head_accuracy(codes, labels)
        result[precision] = {
            "relative_error_vs_fp32": relative_error(codes, reference),
            "head_accuracy": accuracy,
            "accuracy_change_points": accuracy - base_accuracy,
            "predictions_changed": int((predicted != base_predicted).sum()),
            "within_allowed": abs(accuracy - base_accuracy) <= 0.5,
            "seconds": seconds,
            "speedup_vs_fp32_here": reference_seconds / seconds,
        }
    if naive_codes is not None:
        accuracy, _ = head_accuracy(naive_codes, labels)
        result["naive_loop_fp32"] = {
            "relative_error_vs_ours_fp32": relative_error(naive_codes, reference),
            "head_accuracy": accuracy,
            "note": "the notebook's float PIL pipeline vs ours (uint8 resize, normalise on "
            "device) at fp32: a check that both compute the same codes",
        }
    return result


# --------------------------------------------------------------------------- report


def rate(entries: list[dict[str, object]]) -> float:
    return sum(e["images"] for e in entries) / sum(e["seconds"] for e in entries)


def print_precision(precision: dict[str, object]) -> None:
    say(
        f"precision check on {precision['images']} images: head accuracy at fp32 "
        f"{precision['fp32']['head_accuracy']:.1f}%"
    )
    for name, entry in precision.items():
        if isinstance(entry, dict) and "relative_error_vs_fp32" in entry:
            say(
                f"  {name}: codes relative error "
                f"{entry['relative_error_vs_fp32']['overall']:.2e}, head accuracy "
                f"{entry['head_accuracy']:.1f}% ({entry['accuracy_change_points']:+.1f} points, "
                f"{entry['predictions_changed']} predictions changed), "
                f"{entry['speedup_vs_fp32_here']:.1f}x fp32's speed"
            )
    floor = precision["noise_floor"]
    say(
        f"  noise floor (fp32 codes not rounded to float16): "
        f"{floor['accuracy_change_points']:+.1f} points, "
        f"{floor['predictions_changed']} predictions changed"
    )
    if "naive_loop_fp32" in precision:
        error = precision["naive_loop_fp32"]["relative_error_vs_ours_fp32"]["overall"]
        say(f"  naive loop vs ours, both fp32: codes relative error {error:.1e}")


def print_table(result: dict[str, object]) -> None:
    r = result["results"]
    say()
    say(
        f"{result['machine']['device_name']}, {result['machine']['cpu_count']} CPUs; "
        f"{result['dataset']['description']}"
    )
    if "ours" in r:
        rows = [
            ("naive loop (ImageFolder+PIL, bs 20, fp32, 0 workers)", r["naive"]["images_per_s"]),
            (
                f"ours end to end ({r['ours']['precision']}, to the store)",
                r["ours"]["images_per_s"],
            ),
            ("ours after the first batch (no setup/compile)", r["ours"]["steady_images_per_s"]),
            (f"ours model only ({r['model_only']['precision']})", r["model_only"]["images_per_s"]),
        ]
        for name, entry in r["decode_only"].items():
            rows.append(
                (f"decode only: {name} ({entry['workers']} workers)", entry["images_per_s"])
            )
        width = max(len(name) for name, _ in rows)
        say(f"| {'stage'.ljust(width)} | images/s |")
        say(f"| {'-' * width} | -------: |")
        for name, value in rows:
            shown = "n/a" if value is None else f"{value:8.1f}"
            say(f"| {name.ljust(width)} | {shown:>8} |")
        speedup = r["speedup_vs_naive"]
        shown = "n/a" if speedup is None else f"{speedup:7.2f}x"
        say(f"| {'speed-up, end to end vs naive'.ljust(width)} | {shown:>8} |")
        say("  per round: " + ", ".join(f"{x:.2f}x" for x in r["speedup_per_round"]))
        say(
            "  model only per round: " + ", ".join(f"{x:.1f}" for x in r["model_only"]["per_round"])
        )
        gpu = r["gpu_utilisation"]
        say(f"  GPU utilisation: naive {gpu['naive']}, ours {gpu['ours']}")
    print_precision(r["precision"])
    for name, target in result["targets"].items():
        verdict = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
        say(f"  target {name} >= {target['goal']}: {target['measured']} ({verdict})")
    say(f"  weights: {result['weights']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--limit", type=int, default=None, help="source images (even per class)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--replicate",
        type=int,
        default=1,
        help="copies per source image: the original plus N-1 re-encoded variants",
    )
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    parser.add_argument(
        "--weights",
        default="random",
        help="random (default) | imagenet | path: real weights to redo the precision check",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="64 on CPU, 256 on CUDA")
    parser.add_argument("--num-workers", type=int, default=None, help="default: extract's rule")
    parser.add_argument("--gpu-decode", action="store_true", help="nvJPEG decode on the device")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--rounds", type=int, default=None, help="naive/ours pairs (3 CPU, 1 CUDA)")
    parser.add_argument("--model-seconds", type=float, default=5.0)
    parser.add_argument(
        "--precision-images", type=int, default=None, help="original images in the precision check"
    )
    parser.add_argument("--skip-naive", action="store_true", help="smoke tests only")
    parser.add_argument(
        "--precision-only",
        action="store_true",
        help="only the precision check (writes extract_<device>_precision.json)",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON path")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--note", action="append", default=[], help="recorded in the JSON")
    parser.add_argument("--export-subset", type=Path, default=None, metavar="DIR")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--naive-child", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, object] | None:
    args = parse_args(argv)
    if args.naive_child is not None:
        naive_child(args.naive_child)
        return None
    data = args.data if args.data.is_absolute() else Path.cwd() / args.data
    sources = list_images(data) if data.is_dir() else []
    if not sources:
        raise SystemExit(missing_data_message(data))
    if args.export_subset is not None:
        copied = export_subset(sources, args.export_subset, args.per_class)
        say(f"copied {copied} images to {args.export_subset}")
        return None

    from features.compute.encoder import resolve_device, resolve_precision
    from features.compute.extract import ExtractConfig
    from features.compute.loader import ImageRef
    from features.data.images import ImageLimits
    from features.data.preprocess import Preprocessing

    load_at_start = [round(v, 2) for v in os.getloadavg()]
    device = resolve_device(args.device)
    batch_size = args.batch_size or (256 if device.type == "cuda" else 64)
    rounds = args.rounds or (1 if device.type == "cuda" else 3)
    config = ExtractConfig(
        weights=args.weights,
        seed=0,
        device=str(device),
        precision=args.precision,
        batch_size=batch_size,
        num_workers=args.num_workers,
        channels_last=not args.no_channels_last,
        compile=args.compile,
        gpu_decode=args.gpu_decode,
        preprocessing=Preprocessing(),
    )
    precision = resolve_precision(config.precision, device)
    limits = ImageLimits()
    chosen = select(sources, args.limit)
    say(f"extract_bench on {device}: {len(chosen)} source images from {data}")
    weights_note = RANDOM_WEIGHTS_NOTE if config.weights == "random" else config.weights
    say(f"weights: {weights_note}")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="extract_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        images = build_image_tree(chosen, work, args.replicate)
        started = time.perf_counter()
        hashes = hash_files(images.paths)
        hash_seconds = time.perf_counter() - started
        refs = [ImageRef(sha, path) for sha, path in zip(hashes, images.paths, strict=True)]
        dataset = describe_images(images)
        say(
            f"{dataset['images']} images ({dataset['bytes_total'] / 1e6:.0f} MB, median long "
            f"side {dataset['long_side_median_px']} px), hashed in {hash_seconds:.1f} s"
        )

        originals = [i for i, flag in enumerate(images.original) if flag]
        if args.precision_images is not None:
            originals = [
                originals[i]
                for i in sorted(
                    set(
                        int(k * len(originals) / args.precision_images)
                        for k in range(min(args.precision_images, len(originals)))
                    )
                )
            ]
        keep = {hashes[i] for i in originals}

        say("decode only ...")
        decode, kept_pixels = measure_decode(refs, config, limits, device, keep)
        for name, entry in decode.items():
            say(f"  {name}: {entry['images_per_s']:.1f} images/s")

        naive_runs: list[dict[str, object]] = []
        ours_runs: list[dict[str, object]] = []
        model_only: dict[str, object] | None = None
        if not args.precision_only:
            say(f"model only: building the encoder ({precision}, batch {batch_size}) ...")
            probe = ModelProbe(config, device, len(refs))
            say(f"  warm-up {probe.warm_up_seconds:.1f} s (compiled: {probe.compiled})")
            keep_names = [images.paths[i].name for i in originals]
            for number in range(rounds):
                order = (
                    ("naive", "ours", "model") if number % 2 == 0 else ("model", "ours", "naive")
                )
                for what in order:
                    if what == "naive" and args.skip_naive:
                        continue
                    say(f"round {number + 1}/{rounds}: {what} ...")
                    if what == "model":
                        say(f"  {probe.measure(args.model_seconds):.1f} images/s")
                    elif what == "naive":
                        run = run_naive(
                            images, device, work, number, keep_names, weights_file(config)
                        )
                        naive_runs.append(run)
                        say_run(run)
                    else:
                        run = run_ours(refs, config, limits, work / f"store_{number}", device)
                        ours_runs.append(run)
                        say_run(run)
            model_only = probe.summary()
            del probe  # its memory, before the precision check builds two more encoders

        naive_codes = None
        if naive_runs:
            naive_result = naive_runs[-1]
            loaded = np.load(naive_result["codes_path"])
            position = {name: i for i, name in enumerate(naive_result["names"])}
            naive_codes = loaded[[position[images.paths[i].name] for i in originals]]
        candidates = ["fp16", "bf16"] if device.type == "cuda" else ["bf16"]
        if precision != "fp32" and precision not in candidates:
            candidates.append(precision)
        pixels = torch.stack([kept_pixels[hashes[i]] for i in originals])
        labels = [images.labels[i] for i in originals]
        precision_result = measure_precision(
            pixels, labels, config, device, candidates, naive_codes
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    results: dict[str, object] = {}
    targets: dict[str, object] = {}
    if not args.precision_only:
        results = summarise_runs(naive_runs, ours_runs, precision)
        results["model_only"] = model_only
        results["decode_only"] = decode
        targets = check_targets(device, results)
    results["precision"] = precision_result
    results["prepare_hashing_seconds"] = hash_seconds
    results["replica_build_seconds"] = images.build_seconds
    info = machine_info(device)
    info["load_average_at_start"] = load_at_start
    info["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    settings = asdict(config)
    settings.update(
        resolved_precision=precision,
        rounds=rounds,
        round_order="odd rounds naive, ours, model; even rounds model, ours, naive",
        naive_batch_size=NAIVE_BATCH,
        naive_num_workers=0,
        naive_precision="fp32",
    )
    replicated = (
        f", each also re-encoded {args.replicate - 1} times on this machine (JPEG quality "
        f"85-95, some mirrored, numbered in a JPEG comment) to make {len(images.paths)} "
        f"distinct files"
        if args.replicate > 1
        else ""
    )
    result = {
        "benchmark": "extract" + ("_precision" if args.precision_only else ""),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python bench/extract_bench.py "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": info,
        "notes": args.note,
        "dataset": {
            "source": str(args.data),
            "description": f"{len(chosen)} JPEGs (median long side "
            f"{dataset['long_side_median_px']} px) chosen evenly per class from "
            f"{args.data}{replicated}",
            "source_images": len(chosen),
            "replicate": args.replicate,
            **dataset,
        },
        "weights": weights_note,
        "random_weights": config.weights == "random",
        "settings": settings,
        "results": results,
        "targets": targets,
    }
    print_table(result)
    name = f"extract_{device.type}{'_precision' if args.precision_only else ''}.json"
    outputs = [args.output or RESULTS / name]
    if os.environ.get("OUT"):  # the GPU machine hands back what is written there
        outputs.append(Path(os.environ["OUT"]) / outputs[0].name)
    for path in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        say(f"wrote {path}")
    return result


def summarise_runs(naive_runs, ours_runs, precision: str) -> dict[str, object]:
    naive_rate = rate(naive_runs) if naive_runs else None
    steady = [r["steady_images_per_s"] for r in ours_runs if r["steady_images_per_s"]]
    ours_rate = rate(ours_runs)
    return {
        "naive": {
            "images_per_s": naive_rate,
            "runs": [
                {k: v for k, v in run.items() if k not in ("codes_path", "names")}
                for run in naive_runs
            ],
        },
        "ours": {
            "images_per_s": ours_rate,
            "steady_images_per_s": statistics.median(steady) if steady else None,
            "what": "images_per_s: wall time of the whole extract_codes call (weights, model, "
            "store, loader start, compile if any, every commit); steady_images_per_s: after the "
            "first batch's forward pass, i.e. without setup and compile (median of rounds)",
            "precision": precision,
            "runs": ours_runs,
        },
        "speedup_vs_naive": ours_rate / naive_rate if naive_rate else None,
        "speedup_per_round": [
            (o["images"] / o["seconds"]) / (n["images"] / n["seconds"])
            for n, o in zip(naive_runs, ours_runs, strict=False)
        ],
        "gpu_utilisation": {
            "naive": naive_runs[-1]["gpu_utilisation"] if naive_runs else "n/a",
            "ours": ours_runs[-1]["gpu_utilisation"],
        },
    }


def check_targets(device: torch.device, results: dict[str, object]) -> dict[str, object]:
    measured = {
        "end_to_end_images_per_s": results["ours"]["images_per_s"],
        "speedup_vs_naive": results["speedup_vs_naive"],
        "model_only": results["model_only"]["images_per_s"],
    }
    targets: dict[str, object] = {}
    for name, goal in TARGETS.get(device.type, {}).items():
        value = measured[name]
        if value is None:
            targets[name] = {"goal": goal, "measured": None, "met": None}
        else:
            targets[name] = {"goal": goal, "measured": round(value, 2), "met": value >= goal}
    return targets


if __name__ == "__main__":
    main()
