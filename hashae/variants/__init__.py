"""Every autoencoder of the seed, behind one contract and one registry.

A variant is a frozen config dataclass (with a `kind`) and a model class, registered together:

    config.py    Corruption, AEConfig and each kind's config; the product's defaults and the
                 shape rules that choose the rest (choose_by_shape)
    fields.py    how a config field declares and checks its type and range
    registry.py  kind -> (config class, model class); make_config, check_fields, create
    base.py      Autoencoder: the one forward pass, embedding, bits, decoding, sampling
    kinds.py     linear, undercomplete, denoising, sparse, contractive, vae
    hashing.py   the semantic-hashing autoencoder (the product's binary codes)

Every name below is importable from hashae.variants itself.
"""

from hashae.variants.base import ACTIVATIONS, Autoencoder, Output, split_point
from hashae.variants.config import (
    DECORRELATE_FROM_BITS,
    DECORRELATION_WEIGHT,
    AEConfig,
    ContractiveConfig,
    Corruption,
    DenoisingConfig,
    HashingConfig,
    LinearConfig,
    SparseConfig,
    UndercompleteConfig,
    VAEConfig,
    choose_by_shape,
)
from hashae.variants.hashing import HashingAutoencoder, offdiagonal_correlation, random_shift
from hashae.variants.kinds import (
    ContractiveAutoencoder,
    DenoisingAutoencoder,
    LinearAutoencoder,
    SparseAutoencoder,
    UndercompleteAutoencoder,
    VariationalAutoencoder,
    gaussian_kl,
)
from hashae.variants.registry import REGISTRY, check_fields, create, known_kinds, lookup, make_config, register

__all__ = [
    "ACTIVATIONS",
    "DECORRELATE_FROM_BITS",
    "DECORRELATION_WEIGHT",
    "REGISTRY",
    "AEConfig",
    "Autoencoder",
    "ContractiveAutoencoder",
    "ContractiveConfig",
    "Corruption",
    "DenoisingAutoencoder",
    "DenoisingConfig",
    "HashingAutoencoder",
    "HashingConfig",
    "LinearAutoencoder",
    "LinearConfig",
    "Output",
    "SparseAutoencoder",
    "SparseConfig",
    "UndercompleteAutoencoder",
    "UndercompleteConfig",
    "VAEConfig",
    "VariationalAutoencoder",
    "check_fields",
    "choose_by_shape",
    "create",
    "gaussian_kl",
    "known_kinds",
    "lookup",
    "make_config",
    "offdiagonal_correlation",
    "random_shift",
    "register",
    "split_point",
]
