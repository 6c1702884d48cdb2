"""The identity of a set of codes: two stores may be mixed only if their fingerprints match."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from features.errors import UserError

__all__ = ["Fingerprint", "FingerprintMismatch"]


class FingerprintMismatch(UserError):
    """Codes computed one way were about to be mixed with codes computed another way."""


@dataclass(frozen=True)
class Fingerprint:
    """Everything that changes the numbers in a code, and nothing else.

    Labels are deliberately absent: the store is keyed by image content, so relabelling
    a dataset never invalidates a single code.
    """

    backbone: str
    layer: str
    dim: int
    weights: str  # "sha256:<hex>" or "random:<seed>"
    preprocessing: str  # canonical JSON of features.data.preprocess.Preprocessing.describe()
    precision: str  # compute precision of the forward pass: fp32, fp16 or bf16
    dtype: str  # storage dtype: float16 or float32
    torch: str
    torchvision: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        data = json.loads(text)
        names = {field.name for field in fields(cls)}
        if set(data) != names:
            raise FingerprintMismatch(
                f"fingerprint has keys {sorted(data)}, expected {sorted(names)}; "
                f"the store was written by an incompatible version"
            )
        return cls(**data)

    @property
    def is_random(self) -> bool:
        return self.weights.startswith("random:")

    def differences(
        self, other: Fingerprint, ours: str = "the store holds", theirs: str = "this run computes"
    ) -> list[str]:
        """One line per field that differs, each side introduced by its own phrase."""
        return [
            f"{field.name}: {ours} {getattr(self, field.name)!r}, "
            f"{theirs} {getattr(other, field.name)!r}"
            for field in fields(self)
            if getattr(self, field.name) != getattr(other, field.name)
        ]

    def require_same(
        self,
        other: Fingerprint,
        where: str,
        ours: str = "the store holds",
        theirs: str = "this run computes",
        fix: str = "Point extract at a new store path, or delete the old store to rebuild it.",
    ) -> None:
        """Refuse to mix codes: ``where`` names what holds ours, ``fix`` what to do."""
        differences = self.differences(other, ours, theirs)
        if differences:
            raise FingerprintMismatch(
                f"{where}: its codes were computed differently and are never mixed:\n  "
                + "\n  ".join(differences)
                + f"\n  {fix}"
            )
