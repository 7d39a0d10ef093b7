"""The seed's continuous autoencoders: linear (PCA), undercomplete, denoising, sparse, contractive, VAE."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hashae.variants.base import Autoencoder, info_nce
from hashae.variants.config import (
    ContractiveConfig,
    DenoisingConfig,
    LinearConfig,
    SparseConfig,
    UndercompleteConfig,
    VAEConfig,
)
from hashae.variants.registry import register


@register(LinearConfig)
class LinearAutoencoder(Autoencoder):
    """h = W x + b, x_hat = V h + c. With MSE it learns the principal subspace."""


@register(UndercompleteConfig)
class UndercompleteAutoencoder(Autoencoder):
    """Non-linear encoder/decoder around a narrow linear code."""


@register(DenoisingConfig)
class DenoisingAutoencoder(Autoencoder):
    """Same network as undercomplete; its config corrupts inputs by default."""


@register(SparseConfig)
class SparseAutoencoder(Autoencoder):
    """ReLU code layer with an L1 penalty on the code."""

    code_activation = "relu"

    def penalties(self, x_in, z, h):
        return {"sparsity": self.config.sparsity * h.abs().sum(1).mean()}


@register(ContractiveConfig)
class ContractiveAutoencoder(Autoencoder):
    """Sigmoid code layer whose encoder Jacobian is penalised (robust to small input changes)."""

    code_activation = "sigmoid"

    def penalties(self, x_in, z, h):
        return {"contraction": self.config.contraction * self.jacobian_norm(x_in, h).mean()}

    def jacobian_norm(self, x_in: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """||J_f(x)||_F^2 per item (B,). Closed form when the encoder is one linear layer under the
        sigmoid: sum_j (h_j (1 - h_j))^2 sum_i W_ji^2; batched autograd (vmap of jacrev) otherwise."""
        if len(self.encoder) == 1:
            weight_norms = (self.encoder[0].weight ** 2).sum(1)  # (code,)
            return ((h * (1 - h)) ** 2 * weight_norms).sum(1)

        def code_of(one: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.encode_pre(one.unsqueeze(0)))[0]

        jac = torch.func.vmap(torch.func.jacrev(code_of))(x_in)  # (B, code, *input_shape)
        return jac.flatten(1).pow(2).sum(1)


@register(VAEConfig)
class VariationalAutoencoder(Autoencoder):
    """Gaussian posterior N(mu, sigma^2) sampled by reparameterisation in training, its mean after."""

    encoder_outputs_per_unit = 2
    prior = "N(0, I)"

    def latent(self, z, progress):
        mu, logvar = z.chunk(2, dim=1)  # (B, d) each
        if not self.training:
            return mu
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def penalties(self, x_in, z, h):
        mu, logvar = z.chunk(2, dim=1)
        return {"kl": self.config.beta * gaussian_kl(mu, logvar).mean()}

    @property
    def ties_views(self) -> bool:
        return bool(self.config.invariance or self.config.contrast)

    def view_penalties(self, z_view, z_clean):
        """Ties the posterior mean of an altered copy, mu(view), to the clean image's mu(x):
        invariance * mean ||mu(view) - mu(x)||^2 (both get the gradient; the reconstruction keeps
        the means apart) and contrast * InfoNCE(mu(view), mu(x)) over the whole batch (the copy's
        nearest mean must be its own image's, cosine over contrast_temperature)."""
        c = self.config
        mu_view, mu_clean = z_view[:, : c.code_size], z_clean[:, : c.code_size]  # (B, d) each
        terms = {}
        if c.invariance:
            terms["invariance"] = c.invariance * (mu_view - mu_clean).pow(2).sum(1).mean()
        if c.contrast:
            u, v = self.whole_batch(F.normalize(mu_view, dim=1)), self.whole_batch(F.normalize(mu_clean, dim=1))
            terms["contrast"] = c.contrast * info_nce(u, v, c.contrast_temperature)
        return terms

    def whole_batch_terms(self):
        return frozenset({"contrast"} if self.config.contrast else set())

    def prior_sample(self, n, generator):
        return torch.randn(n, self.config.code_size, generator=generator)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per item, closed form: 1/2 sum(mu^2 + sigma^2 - 1 - log sigma^2)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
