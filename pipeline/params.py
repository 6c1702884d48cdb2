"""params.yaml, loaded and validated in full before any work starts.

Every stage calls :func:`load_params` first, so a typo fails in a second, not an hour in.
Each problem names the key, the value given and what is allowed; all problems are
reported at once. ``python -m pipeline.params [path]`` checks a file without running
anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from classifiers.audit.settings import AuditSettings
from classifiers.data import EVALUATE_ON
from features.compute.backbones import BACKBONES
from features.compute.config import ExtractConfig
from features.compute.feature_sets import DEFAULT_FEATURE_SETS, NAME_PATTERN, FeatureSet
from features.data.images import ImageLimits
from features.errors import UserError
from pipeline.cli import ArgumentParser, run
from pipeline.head_params import HeadEntry, parse_head
from pipeline.paths import Paths
from pipeline.schema import parse
from pipeline.yaml_loader import DuplicateKeyError, read_yaml

__all__ = ["FinetuneParams", "HeadEntry", "Params", "ParamsError", "Paths", "load_params"]

_SHA256_HEX = frozenset("0123456789abcdef")


class ParamsError(UserError):
    """params.yaml does not fit the schema; the message lists every problem."""


@dataclass(frozen=True)
class DataParams:
    root: str  # folder of <class>/<image> or {train,val,test}/<class>/<image>
    limits: ImageLimits = field(default_factory=ImageLimits)


@dataclass(frozen=True)
class SplitParams:
    # Used only when the dataset has no train/val/test folders of its own.
    test_fraction: float = field(default=0.2, metadata={"min_exclusive": 0, "max": 0.9})
    val_fraction: float = field(default=0.0, metadata={"min": 0, "max": 0.9})
    salt: str = "split-v1"  # change it to draw a different (still stable) split


@dataclass(frozen=True)
class EvaluationParams:
    # auto: test when the dataset has one, else val (said in every metrics file).
    evaluate_on: str = field(default="auto", metadata={"choices": EVALUATE_ON})
    # Also score each head without the test images that near-duplicate a train/val image
    # (the audit's leaking groups): the metrics and compare then give both figures.
    without_leaked: bool = True


@dataclass(frozen=True)
class ReportParams:
    heads: list[str] = field(default_factory=list)  # <head>-<set> entries shown beside the best


@dataclass(frozen=True)
class FinetuneParams:
    """One ``finetune@<name>`` stage: train the backbone itself from the images.

    Layers from ``unfreeze_from`` (a graph node of the backbone, e.g. ``classifier.0``; or
    ``features.0``: everything) on are trained with a new output layer; the rest stay
    frozen. Weights, preprocessing and device come from ``extract:``.
    """

    backbone: str = field(default="vgg16", metadata={"choices": tuple(BACKBONES)})
    unfreeze_from: str = "classifier.0"
    epochs: int = field(default=10, metadata={"min": 1})
    patience: int = field(default=3, metadata={"min": 1})  # epochs without val improvement
    lr: float = field(default=1e-3, metadata={"min_exclusive": 0})
    momentum: float = field(default=0.9, metadata={"min": 0, "max": 1})
    weight_decay: float = field(default=5e-4, metadata={"min": 0})
    batch_size: int = field(default=32, metadata={"min": 1})
    val_fraction: float = field(default=0.1, metadata={"min_exclusive": 0, "max": 0.5})
    max_images: int | None = field(default=None, metadata={"min": 1})  # a subset of train
    checkpoint_seconds: float = field(default=180.0, metadata={"min_exclusive": 0})
    seed: int = field(default=0, metadata={"min": 0, "max": 2**32 - 1})


@dataclass(frozen=True)
class DownloadParams:
    url: str
    sha256: str  # of the archive; the download is refused on mismatch


@dataclass(frozen=True)
class Params:
    paths: Paths
    data: DataParams
    split: SplitParams
    extract: ExtractConfig
    downloads: dict[str, DownloadParams]
    heads: dict[str, HeadEntry]
    evaluation: EvaluationParams = field(default_factory=EvaluationParams)
    features: dict[str, FeatureSet] = field(default_factory=lambda: dict(DEFAULT_FEATURE_SETS))
    finetune: dict[str, FinetuneParams] = field(default_factory=dict)
    maps: dict[str, FeatureSet] = field(default_factory=dict)
    block_heads: dict[str, HeadEntry] = field(default_factory=dict)
    audit: AuditSettings = field(default_factory=AuditSettings)
    report: ReportParams = field(default_factory=ReportParams)

    @property
    def stored_sets(self) -> dict[str, FeatureSet]:
        """Every set ``extract`` fills: the code sets, then the map sets."""
        return {**self.features, **self.maps}

    def head(self, name: str) -> HeadEntry:
        """A head of ``heads:`` or ``block_heads:``, by name."""
        entries = {**self.heads, **self.block_heads}
        if name not in entries:
            raise ParamsError(
                f"head {name!r} is not configured; params.yaml heads: {', '.join(sorted(entries))}"
            )
        return entries[name]

    def feature_set(self, name: str | None, head: str | None = None) -> str:
        """``name`` checked against the sets ``head`` trains on (``maps:`` for a block head,
        ``features:`` for others, both without a head); None picks the only one."""
        if head in self.block_heads:
            sets, section = self.maps, "maps"
        elif head in self.heads:
            sets, section = self.features, "features"
        else:
            sets, section = self.stored_sets, "features and maps"
        if name is None and len(sets) == 1:
            return next(iter(sets))
        if name is None:
            raise ParamsError(
                f"several {section} sets in params.yaml; pick one with --features: "
                f"{', '.join(sets)}"
            )
        if name not in sets:
            raise ParamsError(
                f"unknown feature set {name!r}; params.yaml {section}: {', '.join(sets) or 'none'}"
            )
        return name


@dataclass(frozen=True)
class _Sections:
    paths: Paths
    data: DataParams
    split: SplitParams = field(default_factory=SplitParams)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    downloads: dict[str, DownloadParams] = field(default_factory=dict)
    heads: dict[str, Any] = field(default_factory=dict)
    evaluation: EvaluationParams = field(default_factory=EvaluationParams)
    features: dict[str, FeatureSet] = field(default_factory=lambda: dict(DEFAULT_FEATURE_SETS))
    finetune: dict[str, FinetuneParams] = field(default_factory=dict)
    maps: dict[str, FeatureSet] = field(default_factory=dict)
    block_heads: dict[str, Any] = field(default_factory=dict)
    audit: AuditSettings = field(default_factory=AuditSettings)
    report: ReportParams = field(default_factory=ReportParams)


def _check_device(value: str, problems: list[str]) -> None:
    if value == "auto":
        return
    try:
        torch.device(value)
    except RuntimeError:
        problems.append(
            f"extract.device: got {value!r}; allowed: auto, cpu, cuda or cuda:N (a torch device)"
        )


def _check_sha256(key: str, value: str | None, problems: list[str]) -> None:
    if value is not None and (len(value) != 64 or not set(value.lower()) <= _SHA256_HEX):
        problems.append(f"{key}: got {value!r}; allowed: 64 hexadecimal digits")


def _check_maps(
    sets: dict[str, FeatureSet], maps: dict[str, FeatureSet], problems: list[str]
) -> None:
    """Map sets hold maps, code sets codes, and no name is both."""
    for section, entries, want_map in (("features", sets, False), ("maps", maps, True)):
        for name, entry in entries.items():
            layer = BACKBONES[entry.backbone].layers
            found = next((item for item in layer if item.name == entry.layer), None)
            if found is not None and found.is_map != want_map:
                home = "maps: (for block_heads:)" if found.is_map else "features:"
                problems.append(f"{section}.{name}: {entry.layer} belongs under {home}")
    for name in sets.keys() & maps.keys():
        problems.append(f"maps.{name}: also a name under features:; names must differ")


def _check_feature_sets(raw: dict, sets: dict[str, FeatureSet], problems: list[str]) -> None:
    if isinstance(raw.get("extract"), dict) and "backbone" in raw["extract"]:
        problems.append(
            "extract.backbone: moved to features:, named feature sets of {backbone, layer}; "
            "e.g. features: {resnet50_pool: {backbone: resnet50, layer: pool}}"
        )
    if not sets:
        problems.append("features: empty; allowed: at least one feature set, e.g. vgg16_fc6")
    seen: dict[tuple[str, str], str] = {}
    for name, feature_set in sets.items():
        twin = seen.setdefault((feature_set.backbone, feature_set.layer), name)
        if twin != name:
            problems.append(
                f"features.{name}: the same layer as features.{twin}; keep one name per layer"
            )
        if not NAME_PATTERN.fullmatch(name):
            problems.append(
                f"features.{name}: not a usable name; allowed: letters, digits and underscores"
            )
        layers = BACKBONES[feature_set.backbone].layer_names
        if feature_set.layer not in layers:
            problems.append(
                f"features.{name}.layer: got {feature_set.layer!r}; allowed for "
                f"{feature_set.backbone}: {', '.join(layers)}"
            )


def validate(raw: Any, source: str = "params.yaml") -> Params:
    """Turn loaded YAML into :class:`Params`, or raise one error listing every problem."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level, got {raw!r}")
    problems: list[str] = []
    sections = parse(_Sections, raw, "params", problems)
    heads: dict[str, HeadEntry] = {}
    for name, head in (raw.get("heads") or {}).items():
        entry = parse_head(str(name), head, problems)
        if entry is not None:
            heads[str(name)] = entry
    block_heads: dict[str, HeadEntry] = {}
    for name, head in (raw.get("block_heads") or {}).items():
        entry = parse_head(str(name), head, problems, "block_heads")
        if entry is not None:
            block_heads[str(name)] = entry
    if sections is not None:
        for name, download in sections.downloads.items():
            _check_sha256(f"downloads.{name}.sha256", download.sha256, problems)
        _check_sha256("extract.weights_sha256", sections.extract.weights_sha256, problems)
        _check_device(sections.extract.device, problems)
        _check_feature_sets(raw, {**sections.features, **sections.maps}, problems)
        _check_maps(sections.features, sections.maps, problems)
        preprocessing = sections.extract.preprocessing
        if preprocessing.crop > preprocessing.resize:
            problems.append(
                f"params.extract.preprocessing.crop: got {preprocessing.crop}; "
                f"allowed: <= extract.preprocessing.resize "
                f"({preprocessing.resize})"
            )
    if problems:
        lines = [p.removeprefix("params.") for p in problems]
        if len(lines) == 1:
            raise ParamsError(f"{source}: {lines[0]}")
        raise ParamsError(f"{source}: {len(lines)} problems:\n  " + "\n  ".join(lines))
    assert sections is not None
    return Params(
        sections.paths,
        sections.data,
        sections.split,
        sections.extract,
        sections.downloads,
        heads,
        sections.evaluation,
        sections.features,
        sections.finetune,
        sections.maps,
        block_heads,
        sections.audit,
        sections.report,
    )


def load_params(path: Path = Path("params.yaml")) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found; run from the project folder")
    try:
        raw = read_yaml(path)
    except DuplicateKeyError as error:
        raise ParamsError(f"{path}: {error}") from error
    except yaml.YAMLError as error:
        raise ParamsError(f"{path} is not valid YAML: {error}") from error
    return validate(raw, str(path))


def main(argv: Sequence[str]) -> None:
    parser = ArgumentParser(description="Check params.yaml without running anything.")
    parser.add_argument("params", type=Path, nargs="?", default=Path("params.yaml"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    print(f"{args.params}: ok ({len(params.heads)} heads: {', '.join(params.heads)})")


if __name__ == "__main__":
    run(main)
