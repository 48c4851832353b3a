"""Element types of fusegraph tensors and their torch equivalents."""

from __future__ import annotations

import builtins
import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class DType(enum.Enum):
    """A tensor element type. The value is the spelling used in the text IR."""

    float32 = "f32"
    float16 = "f16"
    bfloat16 = "bf16"
    int8 = "i8"
    uint8 = "u8"
    int32 = "i32"
    uint32 = "u32"
    int64 = "i64"
    bool = "bool"

    def __repr__(self) -> str:
        return f"DType.{self.name}"

    @property
    def is_float(self) -> builtins.bool:  # `bool` here is the member DType.bool
        """True for the floating-point types."""
        return self in (DType.float32, DType.float16, DType.bfloat16)

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return _ITEMSIZE[self]

    @classmethod
    def from_spelling(cls, spelling: str) -> DType:
        """Parse the IR spelling (`f32`, `bf16`, ...), raising a ValueError that lists
        the allowed spellings."""
        try:
            return cls(spelling)
        except ValueError:
            allowed = ", ".join(d.value for d in cls)
            raise ValueError(f"unknown dtype {spelling!r}; allowed: {allowed}") from None

    def to_torch(self) -> torch.dtype:
        """The equivalent `torch.dtype`."""
        import torch

        dtype: torch.dtype = getattr(torch, self.name)  # the members are named after torch's dtypes
        return dtype

    @classmethod
    def from_torch(cls, dtype: torch.dtype) -> DType:
        """The DType of a `torch.dtype`, or a ValueError naming the unsupported dtype."""
        name = str(dtype).removeprefix("torch.")
        if name not in cls.__members__:
            allowed = ", ".join(cls.__members__)
            raise ValueError(f"unsupported torch dtype {dtype}; allowed: {allowed}")
        return cls[name]


_ITEMSIZE = {
    DType.float32: 4,
    DType.float16: 2,
    DType.bfloat16: 2,
    DType.int8: 1,
    DType.uint8: 1,
    DType.int32: 4,
    DType.uint32: 4,
    DType.int64: 8,
    DType.bool: 1,
}
