"""Embedding networks: x [n, ...] → features [n, k], learned jointly with the ratio or posterior network on top.

An embedding lets the ratio family (g(embed(x), θ)) and the posterior family (q̂(θ | embed(x))) take x that is
not a flat vector: many i.i.d. trials, a time series, an image. The likelihood family (NDE, SCANDAL) refuses
one: a flow on features is a density of the features, not of x (docs/methods/embeddings.md).

``embedding=`` of an estimator is None (x flattened and standardised, as without this module), one of the
built-in names of ``EMBEDDINGS``, or a ``torch.nn.Module`` of the user's mapping x [n, ...] to [n, k]:

- "mlp" (``MLPEmbedding``): an MLP on standardised, flattened x;
- "set" (``SetEmbedding``): DeepSets (Zaheer et al., arXiv:1703.06114) for x [n, m, d], m i.i.d. trials;
- "masked_set" (``SetEmbedding`` with a mask): a varying number of trials, x [n, m_max, d + 1] padded by
  ``pad_trials`` (the last column is 1 for a trial, 0 for padding);
- "conv1d" (``Conv1dEmbedding``): 1-D convolutions for time series x [n, T] or [n, C, T];
- "conv2d" (``ImageEmbedding``): the residual image encoder (``conv_networks.ImageEncoder``), x [n, H, W] or
  [n, C, H, W].

A built-in is made from statistics of the training x (``describe_embedding`` → a dict saved with the model, then
``make_embedding``), so it is rebuilt exactly by ``sluice.load``. A user's module is not pickled (models load
with ``weights_only``, which cannot run code from a file): its weights are saved, and the module is passed again
at load, ``NPE.load(path, embedding=MyEmbedding())``; ``sluice.load`` of such a file explains this.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence

import torch
import torch.nn as nn

from .base import REGISTRY
from .conv_networks import DEFAULT_CHANNELS, ImageEncoder, check_norm
from .networks import FeaturePotential, Standardize, activation_class, mlp

__all__ = ["EMBEDDINGS", "FEATURES", "MLPEmbedding", "SetEmbedding", "Conv1dEmbedding", "ImageEmbedding",
           "EmbeddedPotential", "EmbeddingOptions", "pad_trials", "check_embedding", "describe_embedding",
           "make_embedding", "embed"]

EMBEDDINGS = ("mlp", "set", "masked_set", "conv1d", "conv2d")
FEATURES = 32  # k, the width of a built-in embedding's output
CONV1D_CHANNELS = (16, 32)
CONV1D_POSITIONS = 8  # a 1-D feature map is averaged down to this many positions: coarse timing survives
ENCODE_CHUNK = 4096  # rows per embedding pass outside training (bounds memory for large evaluations)
USER = "user"  # the name saved for a user's module


# --- the built-in embeddings ----------------------------------------------------------------------------------
class MLPEmbedding(nn.Module):
    """x [n, *x_shape] → [n, features]: an MLP (widths ``hidden``) on x flattened and standardised per entry."""

    def __init__(self, x_shape, mean: torch.Tensor, std: torch.Tensor, hidden, activation: str,
                 features: int = FEATURES):
        super().__init__()
        self.x_shape = tuple(int(k) for k in x_shape)
        self.scale = Standardize(mean, std)
        self.body = mlp(self.scale.mean.numel(), features, hidden, activation)
        self.n_features = features

    @staticmethod
    def statistics(x: torch.Tensor) -> dict:
        scale = Standardize.fit(x)
        return {"x_shape": list(x.shape[1:]), "mean": scale.mean, "std": scale.std}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_trailing(x, self.x_shape, "mlp")
        return self.body(self.scale(x))


class SetEmbedding(nn.Module):
    """DeepSets for i.i.d. trials: x [n, m, d] (or [n, m] when d = 1) → [n, features],

        embed(x_i) = ρ([mean_j φ(x_ij), max_j φ(x_ij), log(1 + m_i)]),

    φ an MLP on each standardised trial, ρ an MLP on the pooled features. The pooled features do not depend on the
    order of the trials, bit for bit: the mean sums each feature's values after sorting them, so every order of
    the trials gives the same floating-point sum. log(1 + m_i) tells ρ how many trials there were, which the
    posterior's width depends on (a mean and a maximum alone hardly do).

    With ``masked``, x is [n, m_max, d + 1] as ``pad_trials`` makes it: the last column is 1 for a trial and 0 for
    padding, and only trials enter the pools (m_i counts them). Any number of trials may be passed at prediction
    time, more or fewer than in training.
    """

    def __init__(self, d: int, mean: torch.Tensor, std: torch.Tensor, hidden, activation: str, masked: bool,
                 features: int = FEATURES):
        super().__init__()
        self.d, self.masked = int(d), bool(masked)
        self.scale = Standardize(mean, std)
        width = hidden[-1] if hidden else features
        self.per_trial = mlp(self.d, width, hidden[:-1], activation)
        self.after_pooling = mlp(2 * width + 1, features, hidden, activation)
        self.n_features = features

    @staticmethod
    def statistics(x: torch.Tensor, masked: bool) -> dict:
        trials, mask = _trials_and_mask(_as_trials(x), masked)
        real = trials[mask]  # [number of real trials, d]
        scale = Standardize.fit(real)
        return {"d": trials.shape[2], "mean": scale.mean, "std": scale.std, "masked": masked}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        trials, mask = _trials_and_mask(_as_trials(x), self.masked)
        if trials.shape[2] != self.d:
            expected = self.d + 1 if self.masked else self.d
            raise ValueError(f"the set embedding was trained on trials of {expected} columns"
                             f"{' (the last the mask)' if self.masked else ''}, got x of shape {list(x.shape)}")
        n, m, d = trials.shape
        phi = self.per_trial(self.scale(trials.reshape(n * m, d))).reshape(n, m, -1)
        inside = mask[:, :, None]
        count = mask.sum(dim=1, keepdim=True).to(phi.dtype)  # [n, 1]
        # sorting each feature over the trials first makes the sum independent of the trials' order, bit for bit
        total = torch.where(inside, phi, torch.zeros_like(phi)).sort(dim=1).values.sum(dim=1)
        mean = total / count.clamp_min(1.0)
        largest = torch.where(inside, phi, torch.full_like(phi, -math.inf)).amax(dim=1) if m else phi.sum(dim=1)
        largest = torch.where(count > 0, largest, torch.zeros_like(largest))  # no trials: no maximum
        return self.after_pooling(torch.cat([mean, largest, torch.log1p(count)], dim=1))


class Conv1dEmbedding(nn.Module):
    """Time series x [n, T] or [n, C, T] → [n, features]: convolutions of width 5 and stride 2 (``channels``),
    the feature map averaged down to ``CONV1D_POSITIONS`` positions (coarse timing kept, any T accepted), then a
    linear map. Each channel of x is standardised by its mean and spread over the training series."""

    def __init__(self, n_channels: int, mean: torch.Tensor, std: torch.Tensor, activation: str,
                 channels: tuple[int, ...] = CONV1D_CHANNELS, features: int = FEATURES):
        super().__init__()
        self.n_channels = int(n_channels)
        self.register_buffer("mean", mean.detach().clone().to(torch.float32).reshape(1, -1, 1))
        self.register_buffer("std", std.detach().clone().to(torch.float32).clamp_min(1e-6).reshape(1, -1, 1))
        layers, width = [], self.n_channels
        for size in channels:
            layers += [nn.Conv1d(width, size, 5, stride=2, padding=2), activation_class(activation)()]
            width = size
        self.convolutions = nn.Sequential(*layers, nn.AdaptiveAvgPool1d(CONV1D_POSITIONS), nn.Flatten())
        self.out = nn.Linear(width * CONV1D_POSITIONS, features)
        self.n_features = features

    @staticmethod
    def _series(x: torch.Tensor) -> torch.Tensor:
        if x.ndim not in (2, 3):
            raise ValueError(f"the conv1d embedding needs time series x of shape [n, T] or [n, C, T], got "
                             f"{list(x.shape)}")
        return x[:, None] if x.ndim == 2 else x

    @classmethod
    def statistics(cls, x: torch.Tensor) -> dict:
        series = cls._series(x)
        return {"n_channels": series.shape[1], "mean": series.mean(dim=(0, 2)), "std": series.std(dim=(0, 2))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        series = self._series(x)
        if series.shape[1] != self.n_channels:
            raise ValueError(f"the conv1d embedding was trained on {self.n_channels} channel(s), got x of shape "
                             f"{list(x.shape)}")
        return self.out(self.convolutions((series - self.mean) / self.std))


class ImageEmbedding(nn.Module):
    """Images x [n, H, W] or [n, C, H, W] → [n, 2 c_last]: ``conv_networks.ImageEncoder`` (a residual encoder
    with global mean and max pooling) on pixels standardised by one mean and spread of the training images."""

    def __init__(self, image_shape, pixel_mean: float, pixel_std: float, activation: str,
                 channels: tuple[int, ...] = DEFAULT_CHANNELS, norm: str = "batch"):
        super().__init__()
        self.image_shape = tuple(int(k) for k in image_shape)
        if len(self.image_shape) not in (2, 3):
            raise ValueError(f"the conv2d embedding needs images x of shape [n, H, W] or [n, C, H, W], got rows of "
                             f"shape {list(self.image_shape)}")
        self.n_channels = 1 if len(self.image_shape) == 2 else self.image_shape[0]
        self.register_buffer("pixel_mean", torch.tensor(float(pixel_mean)))
        self.register_buffer("pixel_std", torch.tensor(max(float(pixel_std), 1e-6)))
        self.encoder = ImageEncoder(self.n_channels, tuple(channels), activation, check_norm(norm))
        self.n_features = self.encoder.n_features

    @staticmethod
    def statistics(x: torch.Tensor) -> dict:
        return {"image_shape": list(x.shape[1:]), "pixel_mean": float(x.mean()), "pixel_std": float(x.std())}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_trailing(x, self.image_shape, "conv2d")
        images = x.reshape(x.shape[0], self.n_channels, *self.image_shape[-2:])
        return self.encoder((images - self.pixel_mean) / self.pixel_std)


def _check_trailing(x: torch.Tensor, shape: tuple, name: str) -> None:
    if tuple(x.shape[1:]) != shape:
        raise ValueError(f"the {name} embedding was trained on x of shape [n, {', '.join(map(str, shape))}], got "
                         f"{list(x.shape)}")


def _as_trials(x: torch.Tensor) -> torch.Tensor:
    """x as [n, m, columns]: [n, m] is m scalar trials."""
    if x.ndim == 2:
        return x[:, :, None]
    if x.ndim != 3:
        raise ValueError(f"a set embedding needs trials x of shape [n, m, d] (or [n, m] for scalar trials), got "
                         f"{list(x.shape)}")
    return x


def _trials_and_mask(x: torch.Tensor, masked: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(trials [n, m, d], mask [n, m] bool) of x [n, m, columns]: the last column is the mask where ``masked``."""
    if not masked:
        return x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if x.shape[2] < 2:
        raise ValueError(f"a masked set needs x of shape [n, m_max, d + 1], the last column the mask (pad_trials "
                         f"makes it), got {list(x.shape)}")
    return x[:, :, :-1], x[:, :, -1] > 0.5


def pad_trials(trials: Sequence[torch.Tensor]) -> torch.Tensor:
    """Observations with different numbers of i.i.d. trials, a list of [m_i, d] (or [m_i]) tensors, as one
    [n, m_max, d + 1] tensor for ``embedding="masked_set"``: trials padded with zeros to m_max = max m_i, and a
    last column that is 1 for a trial and 0 for padding. For one observation x_o: ``pad_trials([x_o])[0]``.

    >>> x = pad_trials([torch.tensor([[0.5], [1.5]]), torch.tensor([[2.0]])])
    >>> x.shape, x[1].tolist()
    (torch.Size([2, 2, 2]), [[2.0, 1.0], [0.0, 0.0]])
    """
    rows = [torch.as_tensor(t, dtype=torch.float32) for t in trials]
    rows = [t[:, None] if t.ndim == 1 else t for t in rows]
    if not rows:
        raise ValueError("pad_trials: no observations given")
    widths = {t.shape[1] for t in rows}
    if len(widths) > 1 or any(t.ndim != 2 for t in rows):
        raise ValueError(f"pad_trials: every observation must be [m_i, d] with one d, got shapes "
                         f"{sorted({tuple(t.shape) for t in rows})}")
    (d,) = widths
    padded = torch.zeros(len(rows), max(t.shape[0] for t in rows), d + 1)
    for i, t in enumerate(rows):
        padded[i, :t.shape[0], :d] = t
        padded[i, :t.shape[0], d] = 1.0
    return padded


# --- describing, building and running an embedding ------------------------------------------------------------
def check_embedding(embedding) -> None:
    """Raise a ValueError unless ``embedding`` is None, a built-in name or a torch.nn.Module."""
    if embedding is None or isinstance(embedding, nn.Module) or embedding in EMBEDDINGS:
        return
    raise ValueError(f"unknown embedding {embedding!r}: pass None, one of {list(EMBEDDINGS)}, or a torch.nn.Module "
                     "mapping x [n, ...] to features [n, k]")


def describe_embedding(embedding, x: torch.Tensor, channels: tuple[int, ...] = DEFAULT_CHANNELS,
                       norm: str = "batch") -> dict:
    """What rebuilds the embedding, from the training x [n, ...]: {"name": ..., statistics, sizes}; saved with the
    model. ``channels`` and ``norm`` set the "conv2d" encoder."""
    check_embedding(embedding)
    if isinstance(embedding, nn.Module):
        probe = copy.deepcopy(embedding).eval()  # a copy: a probe must not move batch-norm statistics
        with torch.no_grad():
            features = probe(x[:2])
        if features.ndim != 2 or features.shape[0] != min(2, x.shape[0]):
            raise ValueError(f"the embedding module {type(embedding).__name__} must map x [n, ...] to features "
                             f"[n, k]; on x of shape {list(x[:2].shape)} it gave {list(features.shape)}")
        return {"name": USER, "class": type(embedding).__qualname__, "n_features": int(features.shape[1])}
    if embedding == "mlp":
        return {"name": "mlp", **MLPEmbedding.statistics(x)}
    if embedding in ("set", "masked_set"):
        return {"name": embedding, **SetEmbedding.statistics(x, masked=embedding == "masked_set")}
    if embedding == "conv1d":
        return {"name": "conv1d", **Conv1dEmbedding.statistics(x)}
    if x.ndim not in (3, 4):
        raise ValueError(f"embedding='conv2d' needs images x of shape [n, H, W] or [n, C, H, W], got "
                         f"{list(x.shape)}")
    return {"name": "conv2d", **ImageEmbedding.statistics(x), "channels": list(channels), "norm": norm}


def make_embedding(info: dict, embedding, hidden, activation: str) -> nn.Module:
    """The embedding network from ``describe_embedding``'s ``info``; ``embedding`` is the estimator's argument
    (for a user's module: a copy of it is trained, from its current weights)."""
    name = info["name"]
    settings = {key: value for key, value in info.items() if key != "name"}
    if name == USER:
        if not isinstance(embedding, nn.Module):
            raise ValueError(f"this model was trained with an embedding module of your own ({info['class']}); its "
                             "code is not saved with the model, only its weights: load it with "
                             f"Estimator.load(path, embedding={info['class']}(...)), e.g. sluice.estimators.NPE.load")
        return copy.deepcopy(embedding)
    hidden = tuple(hidden)
    if name == "mlp":
        return MLPEmbedding(settings["x_shape"], settings["mean"], settings["std"], hidden, activation)
    if name in ("set", "masked_set"):
        return SetEmbedding(settings["d"], settings["mean"], settings["std"], hidden, activation, settings["masked"])
    if name == "conv1d":
        return Conv1dEmbedding(settings["n_channels"], settings["mean"], settings["std"], activation)
    return ImageEmbedding(settings["image_shape"], settings["pixel_mean"], settings["pixel_std"], activation,
                          tuple(settings["channels"]), settings["norm"])


def embed(embedding: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """features [n, k] = embedding(x). In eval mode without an autograd graph and in chunks of ``ENCODE_CHUNK``
    rows: predictions need gradients in θ only (scores), and evaluating many x stays in bounded memory."""
    if embedding.training:
        return embedding(x)
    with torch.no_grad():
        parts = [embedding(x[i:i + ENCODE_CHUNK]) for i in range(0, x.shape[0], ENCODE_CHUNK)]
    return torch.cat(parts) if parts else embedding(x)


class EmbeddedPotential(FeaturePotential):
    """g(x, θ) = MLP([embed(x), standardised θ]) [n]: the ratio family's potential on an embedding, so
    log r̂(x|θ0,θ1) = g(x,θ0) − g(x,θ1) as with ``networks.Potential``; the embedding runs once per x whatever the
    number of θ (``pair``, ``table``)."""

    def __init__(self, embedding: nn.Module, n_features: int, theta_scale: Standardize, hidden, activation: str):
        super().__init__(n_features, theta_scale, hidden, activation)
        self.embedding = embedding

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return embed(self.embedding, x)


# --- what an estimator with an embedding adds: its argument, building, save and load -----------------------------
class EmbeddingOptions:
    """The ``embedding`` argument of an estimator family (the ratio and posterior families) and the saving of a
    user's module: its weights are in the model's state, its code is not, so ``_state`` saves
    ``embedding=None`` with the hyperparameters and ``load(path, embedding=module)`` gives the module back."""

    def _init_embedding(self, embedding) -> None:
        check_embedding(embedding)
        self.embedding = embedding

    def _describe_embedding(self, x: torch.Tensor, **options) -> dict | None:
        return None if self.embedding is None else describe_embedding(self.embedding, x, **options)

    def _make_embedding(self, info: dict) -> tuple[nn.Module, int]:
        """(the embedding network, k its number of features)."""
        network = make_embedding(info, self.embedding, self.hidden, self.activation)
        return network, int(info["n_features"]) if info["name"] == USER else network.n_features

    def _state(self) -> dict:
        state = super()._state()
        if isinstance(self.embedding, nn.Module):  # weights_only loading cannot rebuild a module from a file
            state["params"] = {**state["params"], "embedding": None}
        return state

    @classmethod
    def load(cls, path, embedding: nn.Module | None = None):
        """The estimator saved at ``path``; ``embedding``: the user's module it was trained with (the same class
        and sizes; its weights are replaced by the saved ones), which ``sluice.load`` cannot rebuild."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such model file: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "params" not in state:
            raise ValueError(f"{path} is not a file of one sluice estimator")
        saved = REGISTRY[state["estimator"]]
        if not issubclass(saved, cls):
            raise ValueError(f"{path} holds a {state['estimator']}, not a {cls.__name__}")
        if embedding is not None:
            state = {**state, "params": {**state["params"], "embedding": embedding}}
        return saved._from_state(state)
