"""The scan's memory: validation verdicts by content hash, kept across runs of ``prepare``."""

from __future__ import annotations

import PIL

from features.data.images import ImageLimits

__all__ = ["ScanCache"]


class ScanCache:
    """Validation verdicts by content hash, so reruns neither re-decode nor change their mind.

    A verdict depends on the bytes, the limits and the decoder, so it is keyed by all
    three: a file that was skipped stays skipped until its bytes (hence its hash) change.
    Only verdicts looked up in this run are saved, so the cache never outgrows the data.
    Bump :attr:`FORMAT` whenever the validation rules change, to drop stale verdicts.
    """

    FORMAT = 2
    DECODER = f"Pillow {PIL.__version__}"

    def __init__(self, entries: dict[str, dict[str, str]] | None = None) -> None:
        self.entries = dict(entries or {})
        self._used: set[str] = set()

    @staticmethod
    def _key(sha256: str, limits: ImageLimits) -> str:
        return f"{sha256}:{limits.min_side}:{limits.max_pixels}"

    def get(self, sha256: str, limits: ImageLimits) -> dict[str, str] | None:
        key = self._key(sha256, limits)
        self._used.add(key)
        return self.entries.get(key)

    def put(self, sha256: str, limits: ImageLimits, verdict: dict[str, str]) -> None:
        key = self._key(sha256, limits)
        self._used.add(key)
        self.entries[key] = verdict

    def to_json(self) -> dict[str, object]:
        return {
            "format": self.FORMAT,
            "decoder": self.DECODER,
            "entries": {key: self.entries[key] for key in sorted(self._used & set(self.entries))},
        }

    @classmethod
    def from_json(cls, data: object) -> ScanCache:
        """The cache saved by :meth:`to_json`; empty when it is stale or malformed."""
        if (
            not isinstance(data, dict)
            or data.get("format") != cls.FORMAT
            or data.get("decoder") != cls.DECODER
            or not isinstance(data.get("entries"), dict)
        ):
            return cls()
        entries = {
            key: verdict
            for key, verdict in data["entries"].items()
            if isinstance(verdict, dict) and {"reason", "detail"} <= set(verdict)
        }
        return cls(entries)
