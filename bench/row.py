"""One line of the benchmark table: ours against the reference, in seconds, with peak memory."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Row:
    """`ours`/`reference`: median seconds; peaks in bytes (None: not measured); `note`: e.g. max |Δ|."""

    section: str
    case: str
    ours: float
    reference: float
    ours_peak: int | None = None
    reference_peak: int | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        """ours / reference: below 1 is faster than the reference."""
        return self.ours / self.reference

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}
