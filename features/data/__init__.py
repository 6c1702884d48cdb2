"""Reader side: from a folder of files to a manifest of images worth computing.

In order: ``download`` (an archive, verified and unpacked safely) -> ``scan`` (every file
in one bucket: used, ignored or skipped, with the reason) -> ``images`` (bytes to RGB,
every conversion explicit) -> ``manifest`` (one row per distinct image, label and split)
-> ``preprocess`` (resize and crop at uint8). ``synthetic`` makes the offline demo's data.
"""

from features.data.download import DownloadError, download_dataset
from features.data.images import ImageLimits, ImageRejected, decode_rgb, probe_image
from features.data.manifest import (
    DataReport,
    ManifestRow,
    build_manifest,
    read_manifest,
    write_files_csv,
    write_manifest,
)
from features.data.preprocess import Preprocessing
from features.data.scan import SPLITS, FileOutcome, detect_layout, scan_dataset
from features.data.scan_cache import ScanCache
from features.data.synthetic import make_dataset

__all__ = [
    "SPLITS",
    "DataReport",
    "DownloadError",
    "FileOutcome",
    "ImageLimits",
    "ImageRejected",
    "ManifestRow",
    "Preprocessing",
    "ScanCache",
    "build_manifest",
    "decode_rgb",
    "detect_layout",
    "download_dataset",
    "make_dataset",
    "probe_image",
    "read_manifest",
    "scan_dataset",
    "write_files_csv",
    "write_manifest",
]
