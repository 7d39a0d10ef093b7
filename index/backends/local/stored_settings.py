"""Settings documents as the local store keeps them, and the one place that reads older ones.

Each committed generation freezes StoreSettings.to_dict() as JSON; the working settings live as one
key per field in the catalogue's `meta` table. Stores written by older hashae have documents that
lack newer fields (backend, backend_uri, ...) and may name a field by an old key; they are mapped
here, and only here, into a StoreSettings.
"""

from __future__ import annotations

from typing import Any

from hashae.errors import ConfigError
from hashae.index.backends.base import StoreError
from hashae.index.settings import StoreSettings

# old key -> field of StoreSettings
RENAMED_KEYS = {"code_size": "bits", "nbits": "bits", "latent_size": "latent_dim"}


def settings_from_stored(document: dict[str, Any], *, where: str) -> StoreSettings | None:
    """StoreSettings from a stored document (None when it holds no code length: nothing was set).

    Fields it lacks take their defaults; old key names are mapped. where: named in errors.
    """
    fields = {RENAMED_KEYS.get(key, key): value for key, value in document.items()}
    if "bits" not in fields:
        return None
    try:
        return StoreSettings.from_dict(fields)
    except (ConfigError, TypeError) as err:
        raise StoreError(f"the store settings in {where} are not valid ({err}); index into a new store") from None


def settings_to_stored(settings: StoreSettings) -> dict[str, Any]:
    """The document a generation freezes (JSON values)."""
    return settings.to_dict()
