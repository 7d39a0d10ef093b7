"""The registry of variants: kind -> (config class, model class), and building configs and models by kind."""

from __future__ import annotations

import dataclasses
import typing
from typing import TYPE_CHECKING, Any

from hashae.errors import ConfigError
from hashae.variants.config import AEConfig
from hashae.variants.fields import checked

if TYPE_CHECKING:
    from hashae.variants.base import Autoencoder

REGISTRY: dict[str, tuple[type[AEConfig], type[Autoencoder]]] = {}


def register(config_class: type[AEConfig]):
    """Class decorator: register a model class under its config's kind."""

    def decorate(model_class: type[Autoencoder]) -> type[Autoencoder]:
        REGISTRY[config_class.kind] = (config_class, model_class)
        model_class.config_class = config_class
        return model_class

    return decorate


def known_kinds() -> list[str]:
    """Every registered kind, sorted."""
    return sorted(REGISTRY)


def lookup(kind: str) -> tuple[type[AEConfig], type[Autoencoder]]:
    """(config class, model class) of a kind; an unknown kind names the known ones."""
    try:
        return REGISTRY[kind]
    except KeyError:
        raise ConfigError(f"unknown model kind {kind!r}; known kinds: {', '.join(known_kinds())}") from None


def make_config(kind: str, **fields: Any) -> AEConfig:
    """The product's config of `kind` for these fields (input_shape and code_size above all): the
    class defaults, the shape rules (variants.config.choose_by_shape), then the given fields."""
    config_class, _ = lookup(kind)
    return config_class.from_dict(fields)


def check_fields(kind: str, fields: dict[str, Any]) -> None:
    """Check a kind and the name, type and range of each given field alone, before the data (and so
    the input shape) is known; the rules between fields are checked when the config is built."""
    config_class, _ = lookup(kind)
    unknown = sorted(set(fields) - set(config_class.field_names()))
    if unknown:
        config_class.from_dict(fields)  # raises the one error that names them and the known fields
    hints = typing.get_type_hints(config_class)
    rules = {item.name: item.metadata.get("rules", {}) for item in dataclasses.fields(config_class)}
    for name, value in fields.items():
        checked(config_class, name, value, hints[name], rules[name])


def create(config: AEConfig) -> Autoencoder:
    """A freshly initialised model for a config."""
    _, model_class = lookup(config.kind)
    return model_class(config)
