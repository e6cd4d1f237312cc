"""The Estimator base class: hyperparameters in __init__, learning in fit, one training loop, save and load."""

from __future__ import annotations

import inspect
import math
import os
import warnings
from dataclasses import dataclass

import torch

from ..data.augmented import AugmentedData, OnDiskData
from ..seeding import seeded_global_generator, spawn_seeds
from ..simulators.base import as_theta_batch
from .score_term import SCORE_FIELDS
from .training import BlockRows, train

REGISTRY: dict[str, type] = {}
EVALUATION_CHUNK = 65_536  # rows per forward pass when predicting
# the spawn key of fit's seeds: two entries, so it never meets sluice.simulate's batch keys (index,)
FIT_STREAM = (0x666974, 0)  # "fit"


def default_epochs(n_train: int, batch_size: int, steps: int = 6000) -> int:
    """Enough epochs for about ``steps`` optimiser steps, between 20 and 2000 (early stopping ends most runs)."""
    per_epoch = max(1, math.ceil(n_train / batch_size))
    return int(min(2000, max(20, math.ceil(steps / per_epoch))))


class Estimator:
    """What every estimator shares: hyperparameters in ``__init__``, learning in ``fit`` (one training loop,
    ``training.train``), predictions, ``save`` and ``sluice.load``.

    Arguments every estimator takes (keywords):

    - ``hidden`` ((64, 64, 64)): widths of the hidden layers; ``activation`` ("silu"; smooth, since score terms
      train θ-gradients);
    - ``learning_rate`` (1e-3), ``schedule`` ("cosine": the rate decays along a cosine over the epochs to 1e-5;
      "plateau": halved whenever the validation loss stalls), ``batch_size`` (128), ``steps`` (6000) and
      ``epochs`` (None: enough epochs for ``steps`` optimiser steps, between 20 and 2000), ``patience`` (None:
      max(20, epochs/10) epochs without a better validation loss before stopping early; the best weights are
      kept), ``clip_grad_norm`` (10);
    - ``threads`` (1: small networks train faster on one thread), ``device`` ("cpu", "cuda", "cuda:1", "mps").

    Subclasses set ``needs`` (the data fields their main loss reads; ``uses_score`` adds the joint scores) and
    implement ``_describe(data) -> dict`` (what rebuilds the network: sizes, standardisation statistics),
    ``_make_model(info) -> nn.Module``, ``_tensors(data) -> dict`` (the training tensors) and
    ``_loss(batch) -> scalar``.

    >>> import os, tempfile, sluice, torch
    >>> simulator = sluice.simulators.GaltonBoard()                   # x [n, 1], the nail, θ [n, 1]
    >>> data = sluice.simulate(simulator, simulator.default_prior(), n=1000, seed=0)
    >>> estimator = sluice.estimators.ALICES().fit(data, epochs=2, seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "alices.pt")
    >>> estimator.save(path)
    >>> again = sluice.load(path)
    >>> theta0, theta1 = torch.tensor([-0.8]), torch.tensor([-0.6])
    >>> torch.equal(again.log_ratio(data.x[:5], theta0, theta1), estimator.log_ratio(data.x[:5], theta0, theta1))
    True
    """

    needs: tuple[str, ...] = ("theta0", "theta1", "y", "x")
    uses_score: bool = False

    @property
    def requires(self) -> tuple[str, ...]:
        """The data fields ``fit`` reads."""
        return tuple(self.needs) + (SCORE_FIELDS if self.uses_score else ())

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        REGISTRY[cls.__name__] = cls

    def __init__(self, hidden: tuple[int, ...] = (64, 64, 64), activation: str = "silu", learning_rate: float = 1e-3,
                 batch_size: int = 128, epochs: int | None = None, patience: int | None = None,
                 clip_grad_norm: float = 10.0, schedule: str = "cosine", steps: int = 6000,
                 threads: int = 1, device: str = "cpu"):
        self.hidden = tuple(hidden)
        self.activation = activation
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.clip_grad_norm = clip_grad_norm
        if schedule not in ("cosine", "plateau"):
            raise ValueError(f"{type(self).__name__}: schedule must be 'cosine' or 'plateau', got {schedule!r}")
        self.schedule = schedule
        self.steps = int(steps)
        self.threads = threads
        self.device = str(device)

    # --- hyperparameters ---------------------------------------------------------------------------------
    def get_params(self) -> dict:
        """The constructor arguments, read back from the attributes of the same names."""
        names = set()
        for cls in type(self).__mro__:
            if cls is object:
                continue
            names |= {name for name, parameter in inspect.signature(cls.__init__).parameters.items()
                      if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)}
        return {name: getattr(self, name) for name in sorted(names)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    # --- training ----------------------------------------------------------------------------------------
    def _check_data(self, data: AugmentedData) -> None:
        if not isinstance(data, AugmentedData):
            raise TypeError(f"{type(self).__name__}.fit needs sluice.AugmentedData, got {type(data).__name__}")
        data.require(self.requires, user=type(self).__name__)

    def fit(self, data: AugmentedData, epochs: int | None = None, batch_size: int | None = None,
            validation_fraction: float = 0.2, seed: int = 0, progress: bool | None = None):
        """Train on ``data`` (a validation part of ``validation_fraction`` is held out first); returns self.

        ``seed`` fixes everything random in the fit through independent streams spawned from it (``FitSeeds``:
        the split, the statistics sample of on-disk data, the initialisation, the batch order); the caller's
        random state is left as it was.

        Training runs on ``self.device`` ("cpu", "cuda", "cuda:1", …): the network and, for data in memory, the
        training tensors are moved there once; the fitted network is then moved back, so predictions, saving and
        later steps (SALLY's density) run on the CPU wherever it was trained.

        ``data`` may be on disk (``sluice.AugmentedData.open(path)`` or ``simulate(..., path=...)``): it is then
        read in shuffled blocks in bounded memory, validation is a fixed set of whole blocks, and the statistics
        fitted once (standardisation of x and θ, Var(t)) come from ``data.statistics_sample``, a bounded sample
        of random blocks plus the extreme rows of x."""
        self._check_data(data)
        self._fit_request = {"epochs": epochs, "seed": seed}  # for second stages (SALLY's density)
        device = training_device(self.device, type(self).__name__)
        batch_size = int(batch_size or self.batch_size)
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # small networks train faster on one thread (docs/design.md)
        on_disk = isinstance(data, OnDiskData)
        seeds = FitSeeds.spawn(seed)
        try:
            # the network's initialisation (and any other draw from torch's global generator) is seeded, in a
            # fork that leaves the caller's random state as it was
            with seeded_global_generator(seeds.initialisation):
                training, validation = data.split(validation_fraction, seeds.split) if validation_fraction \
                    else (data, None)
                # on-disk data: the statistics (standardisation, Var(t), a discrete support) come from a bounded
                # sample of blocks (OnDiskData.statistics_sample), and the rows are read block by block
                statistics = training.statistics_sample(seeds.statistics) if on_disk else training
                self.parameter_names_ = data.parameter_names
                self.info_ = self._describe(statistics)
                self.model_ = self._make_model(self.info_)
                self._prepare(statistics)
                epochs = int(epochs or self.epochs or default_epochs(len(training), batch_size, self.steps))
                patience = self.patience or max(20, epochs // 10)  # about 600 optimiser steps by default
                rows = BlockRows(training, self._tensors) if on_disk else _moved(self._tensors(training), device)
                held_out = None if validation is None else \
                    BlockRows(validation, self._tensors) if on_disk else _moved(self._tensors(validation), device)
                self.model_.to(device)
                try:
                    self.history_ = train(
                        self.model_, self._loss, rows, held_out,
                        epochs=epochs, batch_size=batch_size, learning_rate=self.learning_rate, patience=patience,
                        clip_grad_norm=self.clip_grad_norm, schedule=self.schedule, seed=seeds.batches,
                        progress=progress,
                        description=f"training {type(self).__name__}", device=device)
                finally:
                    self.model_.cpu()
                self._after_fit(statistics)
        finally:
            torch.set_num_threads(previous_threads)
        return self

    def _prepare(self, training: AugmentedData) -> None:
        """Hook: statistics the loss needs (e.g. the variance of t), computed on the training part."""

    def _after_fit(self, training: AugmentedData) -> None:
        """Hook: work after the network is trained (e.g. SALLY's density in t̂-space)."""

    # --- prediction helpers -------------------------------------------------------------------------------
    def _require_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit(data) first")

    def _inputs(self, x, *thetas):
        """x as float32 [n, ...] and each θ as [n, p] (a [p] vector is broadcast)."""
        self._require_fitted()
        x = torch.as_tensor(x, dtype=torch.float32)
        if x.ndim == 1:
            x = x[:, None]
        p = len(self.parameter_names_)
        return (x,) + tuple(as_theta_batch(theta, x.shape[0], p).to(torch.float32) for theta in thetas)

    @staticmethod
    def _chunked(function, *tensors) -> torch.Tensor:
        n = tensors[0].shape[0]
        parts = [function(*(t[i:i + EVALUATION_CHUNK] for t in tensors)) for i in range(0, n, EVALUATION_CHUNK)]
        return torch.cat(parts) if parts else torch.empty(0)

    # --- storage ------------------------------------------------------------------------------------------
    def _state(self) -> dict:
        self._require_fitted()
        return {"estimator": type(self).__name__, "params": self.get_params(), "info": self.info_,
                "parameter_names": list(self.parameter_names_), "model": self.model_.state_dict()}

    def save(self, path, overwrite: bool = False) -> None:
        """Write the fitted estimator to ``path`` (refusing to replace a file unless ``overwrite``)."""
        save_state(self._state(), path, overwrite)

    @classmethod
    def _from_state(cls, state: dict):
        with warnings.catch_warnings():  # the saved arguments were warned about when the model was made
            warnings.simplefilter("ignore", UserWarning)
            estimator = cls(**state["params"])
        estimator.parameter_names_ = tuple(state["parameter_names"])
        estimator.info_ = state["info"]
        estimator.model_ = estimator._make_model(state["info"])
        estimator.model_.load_state_dict(state["model"])
        estimator.model_.eval()
        estimator._restore(state)
        return estimator

    def _restore(self, state: dict) -> None:
        """Hook: restore what ``_state`` added beyond the network."""


@dataclass(frozen=True)
class FitSeeds:
    """Independent seeds for the random parts of one fit, spawned from ``fit(seed=...)``: the train/validation
    split, the sample of on-disk rows for the statistics, the network's initialisation, and the batch order."""

    split: int
    statistics: int
    initialisation: int
    batches: int

    @classmethod
    def spawn(cls, seed: int) -> FitSeeds:
        return cls(*spawn_seeds(seed, FIT_STREAM, count=4))


def training_device(name: str, owner: str) -> torch.device:
    """``name`` as a torch.device, with a clear error for a malformed name or a GPU this machine lacks."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{owner}: device={name!r} is not a device name ('cpu', 'cuda', 'cuda:1', …)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{owner}: device={name!r} asks for a CUDA GPU, but torch sees none on this machine "
                           "(use device='cpu')")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise RuntimeError(f"{owner}: device={name!r}, but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{owner}: device={name!r}: sluice trains on 'cpu', 'cuda' or 'mps'")
    return device


def _moved(tensors: dict, device: torch.device) -> dict:
    """The training tensors on ``device`` (no copy where they are already there)."""
    return {name: value.to(device) for name, value in tensors.items()}


class PotentialPredictions:
    """log r̂ and t̂ for models whose ``model_(x, θ)`` is a potential: g(x,θ) or log p̂(x|θ)."""

    def log_ratio(self, x, theta0, theta1) -> torch.Tensor:
        """log r̂(x | θ0, θ1) = model(x, θ0) − model(x, θ1), shape [n]."""
        x, theta0, theta1 = self._inputs(x, theta0, theta1)
        with torch.no_grad():
            return self._chunked(lambda a, b, c: self.model_(a, b) - self.model_(a, c), x, theta0, theta1)

    def score(self, x, theta) -> torch.Tensor:
        """t̂(x|θ) = ∇θ model(x, θ), shape [n, p]."""
        x, theta = self._inputs(x, theta)

        def gradient(x_part, theta_part):
            theta_part = theta_part.clone().requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(self.model_(x_part, theta_part).sum(), theta_part)
            return grad

        return self._chunked(gradient, x, theta)


def save_state(state: dict, path, overwrite: bool) -> None:
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    temporary = path + ".partial"
    torch.save(state, temporary)
    os.replace(temporary, path)


def load(path):
    """Load an estimator or ensemble written by ``save``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such model file: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable sluice model (truncated or corrupt?): {error}") from None
    if not isinstance(state, dict) or state.get("estimator") not in REGISTRY:
        raise ValueError(f"{path} is not a sluice model file")
    return REGISTRY[state["estimator"]]._from_state(state)
