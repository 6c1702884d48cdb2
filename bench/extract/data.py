"""The benchmark's images: listing and choosing them, the subset export, the replicated tree."""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bench.extract import REPO
from bench.extract.report import say

IMAGE_SUFFIXES = (".jpg", ".jpeg")
SPLIT_NAMES = ("train", "val", "test")
# Without --data, the first of these that holds images; generated ones when none does.
DATASETS = (
    ("flower_photos beside the repository", REPO.parent / "shared" / "datasets" / "flower_photos"),
    ("flower_photos that make run downloaded", REPO / "data" / "flower_photos"),
)
GENERATED_IMAGES = 200  # without --limit: what make bench measures


@dataclass(frozen=True)
class Source:
    label: str
    path: Path


@dataclass(frozen=True)
class DataSource:
    """Where the images come from: in words (printed and in the JSON) and on disk."""

    description: str
    root: Path
    sources: list[Source]


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


def spread(items: list[int], count: int | None) -> list[int]:
    """``count`` of ``items``, evenly spaced (all of them without a count)."""
    if count is None:
        return items
    picks = {int(k * len(items) / count) for k in range(min(count, len(items)))}
    return [items[i] for i in sorted(picks)]


def missing_data_message(path: Path) -> str:
    return (
        f"no JPEG images under {path}.\n"
        f"  Pass --data PATH: a folder of <class>/<image>.jpg, or of "
        f"{{train,val,test}}/<class>/<image>.jpg.\n"
        f"  Without --data: ../shared/datasets/flower_photos, else data/flower_photos (make "
        f"run), else generated images.\n"
        f"  For real photos on a machine without them (a GPU machine gets only the "
        f"repository), export a subset here first:\n"
        f"    python -m bench.extract --export-subset .benchdata/flowers --per-class 100\n"
        f"    echo /.benchdata/ >> .git/info/exclude\n"
        f"  then carry .benchdata along and run with --data .benchdata/flowers --replicate 40."
    )


def resolve_data(given: Path | None, scratch: Path, limit: int | None) -> DataSource:
    """``given`` (or exit saying how to get images); else DATASETS; else generated images.

    The generated ones (``limit`` of them, in ``scratch``) let ``make bench`` run on a
    machine that has no dataset at all, a user's machine before ``make run``.
    """
    if given is not None:
        root = given if given.is_absolute() else Path.cwd() / given
        sources = list_images(root) if root.is_dir() else []
        if not sources:
            raise SystemExit(missing_data_message(root))
        return DataSource(f"--data {given}", root, sources)
    for name, root in DATASETS:
        sources = list_images(root) if root.is_dir() else []
        if sources:
            return DataSource(f"{name} ({root}, {len(sources)} images)", root, sources)
    from features.data.synthetic import CLASSES, make_dataset

    root = scratch / "generated"
    make_dataset(root, per_class=-(-(limit or GENERATED_IMAGES) // len(CLASSES)))
    sources = list_images(root)
    return DataSource(f"generated (features.data.synthetic, {len(sources)} images)", root, sources)


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


def dataset_record(
    stats: dict[str, object], data: DataSource, source_images: int, replicate: int
) -> dict[str, object]:
    """The JSON's dataset section: ``describe_images``' stats, and where they come from."""
    replicated = (
        f", each also re-encoded {replicate - 1} times on this machine (JPEG quality "
        f"85-95, some mirrored, numbered in a JPEG comment) to make {stats['images']} "
        f"distinct files"
        if replicate > 1
        else ""
    )
    return {
        "source": str(data.root),
        "data_source": data.description,
        "description": f"{source_images} JPEGs (median long side "
        f"{stats['long_side_median_px']} px) chosen evenly per class from "
        f"{data.description}{replicated}",
        "source_images": source_images,
        "replicate": replicate,
        **stats,
    }
