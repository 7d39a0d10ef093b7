"""hashae: the learning core. Data readers, autoencoder variants, trainer, checkpoints, codes, metrics.

Knows nothing of storage or the CLI (see index/ and cli/).
"""

__version__ = "0.1.0"
