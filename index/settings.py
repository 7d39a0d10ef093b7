"""StoreSettings: what every code and latent in a store was made with. One typed, frozen value,
validated in one place, instead of dicts passed around and checked in several.

A store's settings come from its models (bits = the hashing model's code size, latent_dim = the
VAE's, image_size and channels = their input shape) plus where the images came from and which
backend holds the vectors. Each committed generation freezes a copy, so readers never see a half
change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from hashae.codes import check_nbits
from hashae.errors import ConfigError

DEFAULT_BITS = 32
DEFAULT_LATENT_DIM = 32
DEFAULT_IMAGE_SIZE = 28
MIN_IMAGE_SIZE = 4
BACKENDS = ("local", "milvus")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class StoreSettings:
    """The shape of a store's vectors and where its items come from.

    bits: code length (a positive multiple of 8); latent_dim: VAE latent size; image_size and
    channels: the models' input (channels, image_size, image_size); source_root: the indexed folder
    (absolute), None until a folder is indexed; source_from_store: the same folder relative to the
    store folder (so a store moved or copied together with its folder still knows it is its own);
    backend / backend_uri: where the vectors live.
    """

    bits: int = DEFAULT_BITS
    latent_dim: int = DEFAULT_LATENT_DIM
    image_size: int = DEFAULT_IMAGE_SIZE
    channels: int = 1
    source_root: str | None = None
    source_from_store: str | None = None
    backend: str = "local"
    backend_uri: str | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        try:
            check_nbits(self.bits)
        except Exception as error:  # CodeError: re-raised as a configuration mistake
            raise ConfigError(f"bits: {error}") from None
        _positive_int("latent_dim", self.latent_dim)
        _positive_int("image_size", self.image_size)
        if self.image_size < MIN_IMAGE_SIZE:
            raise ConfigError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {self.image_size}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 (grayscale) or 3 (colour), got {self.channels!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; known: {', '.join(BACKENDS)}")
        for name in ("source_root", "source_from_store"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{name} must be a string, got {value!r}")

    @property
    def code_bytes(self) -> int:
        """Bytes of one packed code."""
        return self.bits // 8

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The models' input (channels, image_size, image_size)."""
        return (self.channels, self.image_size, self.image_size)

    def with_changes(self, **changes: Any) -> StoreSettings:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoreSettings:
        """Settings from a stored document; unknown keys (from a newer hashae) are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown store settings {', '.join(unknown)}; is this store from a newer hashae?")
        return cls(**data)


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
