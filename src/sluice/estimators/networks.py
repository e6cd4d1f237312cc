"""Networks: standardisation, smooth MLPs, the potential g(x,θ) of ratio models, score and likelihood models."""

from __future__ import annotations

import torch
import torch.nn as nn

ACTIVATIONS = {"silu": nn.SiLU, "elu": nn.ELU, "tanh": nn.Tanh, "relu": nn.ReLU}


def activation_class(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def mlp(n_in: int, n_out: int, hidden: tuple[int, ...], activation: str) -> nn.Sequential:
    layers, width = [], n_in
    for size in hidden:
        layers += [nn.Linear(width, size), activation_class(activation)()]
        width = size
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class Standardize(nn.Module):
    """(v − mean) / std with the statistics stored as buffers (saved with the model)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.detach().clone().to(torch.float32))
        self.register_buffer("std", std.detach().clone().to(torch.float32).clamp_min(1e-6))

    @classmethod
    def fit(cls, values: torch.Tensor) -> Standardize:
        flat = values.reshape(values.shape[0], -1)
        mean = flat.mean(dim=0)
        std = flat.std(dim=0) if flat.shape[0] > 1 else torch.zeros(flat.shape[1])
        constant = std <= 1e-5 * (1.0 + mean.abs())  # a constant column (rounding leaves a tiny spread)
        return cls(mean, torch.where(constant, torch.ones_like(std), std))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return (values.reshape(values.shape[0], -1) - self.mean) / self.std


class Potential(nn.Module):
    """g(x, θ), a scalar per row; ratio models use log r̂(x|θ0,θ1) = g(x,θ0) − g(x,θ1).

    That form is antisymmetric by construction and is exactly how a log-likelihood ratio is built
    (g = log p(x|θ) + c(x)), so ∇θ0 log r̂ estimates t(x|θ0) and ∇θ1 log r̂ estimates −t(x|θ1).
    """

    def __init__(self, x_scale: Standardize, theta_scale: Standardize, hidden, activation):
        super().__init__()
        self.x_scale, self.theta_scale = x_scale, theta_scale
        self.body = mlp(x_scale.mean.numel() + theta_scale.mean.numel(), 1, hidden, activation)

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([self.x_scale(x), self.theta_scale(theta)], dim=1))[:, 0]

    def pair(self, x: torch.Tensor, theta0: torch.Tensor, theta1: torch.Tensor):
        """(g(x, θ0), g(x, θ1)) from one pass over the stacked rows (half the per-call overhead of two); a network
        with an expensive x-part (``ConvPotential``) shares it between both."""
        both = self(torch.cat([x, x]), torch.cat([theta0, theta1]))
        return both[:x.shape[0]], both[x.shape[0]:]


TABLE_ROWS = 262_144  # (θ, x) pairs per pass of the head in ``FeaturePotential.table``


class FeaturePotential(nn.Module):
    """g(x, θ) = head([encode(x), standardised θ]) [n] for a network whose x-part (``encode``: x [n, ...] →
    features [n, F]) is expensive: θ joins after it, so it runs once per x whatever the number of θ (``pair`` in
    training, ``table`` on a grid of θ). Subclasses (``conv_networks.ConvPotential``,
    ``embeddings.EmbeddedPotential``) implement ``encode``."""

    def __init__(self, n_features: int, theta_scale: Standardize, hidden, activation: str):
        super().__init__()
        self.theta_scale = theta_scale
        self.head = mlp(n_features + theta_scale.mean.numel(), 1, hidden, activation)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def from_features(self, features: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """g [n] from features [n, F] and θ [n, p]."""
        return self.head(torch.cat([features, self.theta_scale(theta)], dim=1))[:, 0]

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.encode(x), theta)

    def pair(self, x: torch.Tensor, theta0: torch.Tensor, theta1: torch.Tensor):
        """(g(x, θ0), g(x, θ1)) from one pass of ``encode``."""
        features = self.encode(x)
        return self.from_features(features, theta0), self.from_features(features, theta1)

    def table(self, x: torch.Tensor, thetas: torch.Tensor) -> torch.Tensor:
        """g(x_i, θ_g) for every θ_g of ``thetas`` [G, p] and x_i: [G, n], each x encoded once."""
        features = self.encode(x)
        n = features.shape[0]
        step = max(1, TABLE_ROWS // max(n, 1))  # a bounded number of (θ, x) pairs a pass
        rows = []
        for start in range(0, thetas.shape[0], step):
            block = thetas[start:start + step]
            values = self.from_features(features.repeat(block.shape[0], 1), block.repeat_interleave(n, dim=0))
            rows.append(values.reshape(block.shape[0], n))
        return torch.cat(rows) if rows else torch.empty(0, n)


class ScoreNet(nn.Module):
    """t̂(x) [n, p]: the score at a reference point, learned in standardised θ units, returned in θ's own."""

    def __init__(self, x_scale: Standardize, theta_std: torch.Tensor, hidden, activation):
        super().__init__()
        self.x_scale = x_scale
        self.register_buffer("theta_std", theta_std.detach().clone().to(torch.float32))
        self.body = mlp(x_scale.mean.numel(), theta_std.numel(), hidden, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.x_scale(x)) / self.theta_std


FLOWS = ("nsf+maf", "maf", "nsf")


class FlowLikelihood(nn.Module):
    """log p̂(x|θ) from a conditional flow (zuko) on standardised x, with the Jacobian of the standardisation
    added back so the density is in x's own units. Smooth activations (ELU) keep ∇θ exact.

    ``flow``: "nsf" (spline transforms), "maf" (affine autoregressive) or "nsf+maf" (one spline transform
    applied to x, then ``transforms`` − 1 affine ones next to the Gaussian base)."""

    def __init__(self, x_scale: Standardize, theta_scale: Standardize, hidden, activation, transforms: int = 3,
                 flow: str = "nsf"):
        super().__init__()
        import zuko

        families = {"nsf": zuko.flows.NSF, "maf": zuko.flows.MAF}
        if flow not in FLOWS:
            raise ValueError(f"unknown flow {flow!r}; choose one of {list(FLOWS)}")
        self.x_scale, self.theta_scale = x_scale, theta_scale
        settings = dict(features=x_scale.mean.numel(), context=theta_scale.mean.numel(),
                        hidden_features=tuple(hidden), activation=activation_class(activation))
        if flow in families:
            self.flow = families[flow](transforms=transforms, **settings)
        else:  # "nsf+maf": one spline transform on x, then transforms − 1 affine ones next to the Gaussian base
            if transforms < 2:
                raise ValueError(f"flow='nsf+maf' needs transforms ≥ 2 (one spline, the rest affine), got {transforms}")
            spline = zuko.flows.NSF(transforms=1, **settings)
            affine = zuko.flows.MAF(transforms=transforms - 1, **settings)
            self.flow = zuko.flows.Flow([*spline.transform.transforms, *affine.transform.transforms], affine.base)

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        log_jacobian = torch.log(self.x_scale.std).sum()
        return self.flow(self.theta_scale(theta)).log_prob(self.x_scale(x)) - log_jacobian


class CategoricalLikelihood(nn.Module):
    """p̂(x|θ) = softmax(MLP(θ))_k(x) for integer-valued x on a finite support.

    x is encoded as a mixed-radix code over the box [low, low + radix); the support is a sorted list of
    codes. x outside it (or not integer) gets log p̂ = −inf.
    """

    def __init__(self, support: torch.Tensor, low: torch.Tensor, radix: torch.Tensor, theta_scale: Standardize,
                 hidden, activation):
        super().__init__()
        self.register_buffer("support", support.long())
        self.register_buffer("low", low.long())
        self.register_buffer("radix", radix.long())
        self.theta_scale = theta_scale
        self.body = mlp(theta_scale.mean.numel(), support.numel(), hidden, activation)

    @staticmethod
    def encode(x: torch.Tensor, low: torch.Tensor, radix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixed-radix codes [n] of integer rows, and a mask of the rows inside the box."""
        flat = x.reshape(x.shape[0], -1)
        whole = torch.round(flat)
        offset = whole.long() - low
        valid = (whole == flat).all(dim=1) & (offset >= 0).all(dim=1) & (offset < radix).all(dim=1)
        strides = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long, device=radix.device), radix[:-1]]), dim=0)
        return (offset.clamp_min(0) * strides).sum(dim=1), valid

    @classmethod
    def for_data(cls, x: torch.Tensor, theta_scale: Standardize, hidden, activation, margin: float = 0.5):
        """The support seen in ``x``; a 1-D x gets every integer in its range, widened by ``margin`` of it."""
        flat = torch.round(x.reshape(x.shape[0], -1)).long()
        low, high = flat.min(dim=0).values, flat.max(dim=0).values
        if flat.shape[1] == 1:
            pad = max(3, int(round(margin * float(high - low))))
            low, high = low - pad, high + pad
            support = torch.arange(0, int(high - low) + 1)
        else:
            codes, _ = cls.encode(x, low, high - low + 1)
            support = torch.unique(codes)
        return cls(support, low, high - low + 1, theta_scale, hidden, activation)

    def _lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's index in the support, and whether it is there at all."""
        codes, valid = self.encode(x, self.low, self.radix)
        index = torch.searchsorted(self.support, codes).clamp_max(self.support.numel() - 1)
        return index, valid & (self.support[index] == codes)

    def in_support(self, x: torch.Tensor) -> torch.Tensor:
        """[n] bool: the rows of x the model gives a probability (seen in training, or in the widened range)."""
        return self._lookup(x)[1]

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        index, found = self._lookup(x)
        log_probs = torch.log_softmax(self.body(self.theta_scale(theta)), dim=1)
        picked = log_probs.gather(1, index[:, None])[:, 0]
        return torch.where(found, picked, torch.full_like(picked, float("-inf")))


def looks_discrete(x: torch.Tensor, max_categories: int = 256) -> bool:
    """True when every x is integer-valued and the rows take at most ``max_categories`` distinct values."""
    flat = x.reshape(x.shape[0], -1)
    if not torch.equal(flat, torch.round(flat)):
        return False
    if flat.shape[1] == 1:
        return float(flat.max() - flat.min()) < max_categories
    return torch.unique(flat, dim=0).shape[0] <= max_categories
