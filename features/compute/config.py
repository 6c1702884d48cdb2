"""What a run is asked to do (``extract:`` in params.yaml) and what it reports having done."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from features.compute.backbones import BACKBONES
from features.compute.encoder import DTYPES
from features.compute.finite import FiniteStats
from features.compute.loader import Failure
from features.data.preprocess import Preprocessing
from features.store.fingerprint import Fingerprint

__all__ = ["DaskConfig", "ExtractConfig", "ExtractReport"]


@dataclass(frozen=True)
class DaskConfig:
    """Where extraction scales out to when ``extract.scheduler`` is ``dask``."""

    address: str | None = None  # a running scheduler (tcp://host:8786); None: a local cluster
    workers: int = field(default=2, metadata={"min": 1})  # processes of the local cluster
    partition_rows: int = field(default=2048, metadata={"min": 1})  # images per task and shard


@dataclass(frozen=True)
class ExtractConfig:
    """How codes are computed and committed (``extract:`` in params.yaml)."""

    backbone: str = field(default="vgg16", metadata={"choices": tuple(BACKBONES)})
    weights: str = "imagenet"  # imagenet | random | path to a state-dict file
    weights_sha256: str | None = None  # pin for a local weights file
    seed: int = 0  # random weights only
    device: str = "auto"  # auto picks CUDA when present; or cpu, cuda, cuda:1
    precision: str = field(default="auto", metadata={"choices": ("auto", *DTYPES)})
    batch_size: int = field(default=64, metadata={"min": 1})
    num_workers: int | None = field(default=None, metadata={"min": 0})  # None: see extract._workers
    channels_last: bool = True  # 1.6x on CPU, and what fast fp16 convolutions want on GPU
    compile: str = field(default="auto", metadata={"choices": ("auto", "on", "off")})
    compile_min_images: int = field(default=1_000_000, metadata={"min": 0})  # ~80 s to repay
    gpu_decode: bool = False  # nvJPEG on the device, PIL fallback for anything else
    dtype: str = field(default="float16", metadata={"choices": ("float16", "float32")})
    compression: str | None = field(default=None, metadata={"choices": (None, "lzf", "gzip")})
    commit_rows: int = field(default=4096, metadata={"min": 1})
    commit_seconds: float = field(default=60.0, metadata={"min_exclusive": 0})  # max loss
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    scheduler: str = field(default="local", metadata={"choices": ("local", "dask")})
    dask: DaskConfig = field(default_factory=DaskConfig)


@dataclass
class ExtractReport:
    """What one extract run did; ``reused + computed + skipped`` covers every unique image."""

    images: int
    reused: int
    computed: int
    skipped: int
    retry_later: int
    seconds: float
    device: str
    precision: str
    random_weights: bool
    fingerprints: dict[str, Fingerprint]  # layer name -> the identity of its store's codes
    # Codes computed per group of layers lacking them, e.g. {"fc7": 32} when fc7 was added
    # to a complete fc6 store: the forward passes ran for those layers only.
    layers_computed: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    non_finite: int = 0  # of ``skipped``: found this run with NaN or inf codes, fp32 too
    recomputed_fp32: int = 0  # of ``computed``: NaN or inf in fp16/bf16, finite in fp32
    # Where the seconds went: "setup" (weights, model, store, loader), "first_batch" (until
    # the first pixels reached the encoder), "warm_up" (its forward pass: compile, cuDNN
    # autotuning), "drain" (the whole loop, last commit included).
    timings: dict[str, float] = field(default_factory=dict)
    warm_rows: int = 0  # codes computed after the warm-up batch

    def add_timings(self, timings: dict[str, float], rows: int) -> None:
        """Fold in one group's drain: the first group's warm-up stands, drains add up."""
        warm_up_rows = int(timings.pop("warm_up_rows", 0))
        if "warm_up_done" not in self.timings:
            self.timings.update(timings)
            self.warm_rows += rows - warm_up_rows
            return
        self.timings["drain"] = self.timings.get("drain", 0.0) + timings.get("drain", 0.0)
        self.warm_rows += rows

    @property
    def steady_images_per_second(self) -> float:
        """Throughput once the first batch's forward pass is done: no setup, no compile."""
        steady = self.timings.get("drain", 0.0) - self.timings.get("warm_up_done", 0.0)
        return self.warm_rows / steady if steady > 0 else 0.0

    @property
    def images_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0

    def record(
        self,
        layers: Sequence[str],
        rows: int,
        skipped: int,
        retry: Sequence[Failure],
        finite: FiniteStats,
    ) -> None:
        """Add what a drain (or a Dask partition) committed for ``layers``."""
        group = "+".join(layers)
        self.layers_computed[group] = self.layers_computed.get(group, 0) + rows
        self.computed += rows
        self.skipped += skipped
        self.non_finite += finite.skipped
        self.recomputed_fp32 += finite.recomputed
        self.retry_later += len(retry)
        self.failures.extend(
            {"sha256": f.sha256, "reason": f.reason, "detail": f.detail} for f in retry
        )

    def summary(self) -> str:
        weights = next(iter(self.fingerprints.values())).weights
        weights = "RANDOM WEIGHTS" if self.random_weights else weights[:19]
        layers = ", ".join(self.fingerprints)
        return (
            f"extract [{layers}]: reused {self.reused}, computed {self.computed}"
            + (f" ({self.recomputed_fp32} in fp32)" if self.recomputed_fp32 else "")
            + f", skipped {self.skipped}"
            + (f" ({self.non_finite} with NaN or inf codes)" if self.non_finite else "")
            + (f", retry later {self.retry_later}" if self.retry_later else "")
            + f" ({self.images_per_second:.1f} images/s on {self.device}, {self.precision}, "
            f"{weights})"
        )
