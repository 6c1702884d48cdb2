"""Reader side: from a folder of files to a manifest of images worth computing.

In order: ``download`` (an archive, verified and unpacked safely) -> ``scan`` (every file
in one bucket: used, ignored or skipped, with the reason) -> ``images`` (bytes to RGB,
every conversion explicit) -> ``manifest`` (one row per distinct image, label and split)
-> ``preprocess`` (resize and crop at uint8). ``synthetic`` makes the offline demo's data.

Names are imported on first use (PEP 562): ``preprocess`` needs torch (~500 MiB, ~3 s),
and a process that only reads a manifest must not pay for it.
"""

from __future__ import annotations

from importlib import import_module

_HOMES = {  # module -> the names it lends the package
    "download": ("DownloadError", "download_dataset"),
    "images": ("ImageLimits", "ImageRejected", "decode_rgb", "probe_image"),
    "manifest": (
        "DataReport",
        "ManifestRow",
        "build_manifest",
        "read_manifest",
        "write_files_csv",
        "write_manifest",
    ),
    "preprocess": ("Preprocessing",),
    "scan": ("SPLITS", "FileOutcome", "detect_layout", "scan_dataset"),
    "scan_cache": ("ScanCache",),
    "synthetic": ("make_dataset",),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"features.data.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
