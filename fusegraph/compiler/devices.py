"""Device references: where a tensor lives."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceRef:
    """A device: `DeviceRef.CPU()` or `DeviceRef.GPU(id)`. Prints as `cpu` or `gpu:0`."""

    kind: str
    id: int = 0

    @staticmethod
    def CPU() -> DeviceRef:  # noqa: N802 - MAX's spelling
        """The host CPU."""
        return DeviceRef("cpu", 0)

    @staticmethod
    def GPU(id: int = 0) -> DeviceRef:  # noqa: N802 - MAX's spelling
        """GPU number `id`."""
        if id < 0:
            raise ValueError(f"DeviceRef.GPU: id must be >= 0, got {id=}")
        return DeviceRef("gpu", id)

    def __post_init__(self) -> None:
        if self.kind not in ("cpu", "gpu"):
            raise ValueError(f"DeviceRef: kind must be 'cpu' or 'gpu', got {self.kind!r}")

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"gpu:{self.id}"

    def to_torch(self, cuda_index: int | None = None) -> str:
        """The torch device string (`cpu` or `cuda:N`)."""
        return "cpu" if self.kind == "cpu" else f"cuda:{self.id if cuda_index is None else cuda_index}"
