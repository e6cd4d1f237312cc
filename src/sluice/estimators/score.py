"""Score estimators: SALLY (t̂(x) at a reference point, then a density in t̂-space) and SALLINO (the 1-D
statistic h = t̂(x)·(θ − θ_ref)). Both are local: exact near θ_ref, biased far from it.

Density in t̂-space. With only local data (every run at θ_ref), the density of the summary at θ is the
reference sample tilted by the local exponential family that the score defines,

    p̂(t̂ | θ) ∝ p̂(t̂ | θ_ref) · exp(t̂·(θ − θ_ref)),  so  log r̂(x|θ0,θ1) = t̂(x)·(θ0 − θ1) − log Ẑ(θ0) + log Ẑ(θ1),

with Ẑ(θ) = mean over the reference runs of exp(t̂(x_i)·(θ − θ_ref)). For each θ the ratio depends on x only
through h_θ(x) = t̂(x)·(θ − θ_ref), so here SALLY and SALLINO agree. When the data also hold runs at
other θ and x is continuous, SALLY fits a conditional flow p̂(t̂ | θ) on every run and SALLINO a 1-D
conditional flow p̂(h_θ | θ, θ') of the statistic at θ for runs made at θ', and they differ.

SALLINO's ratio reads that flow at two contexts only, for θ across the parameter space of interest:

    log r̂(x|θ, θ_ref) = log p̂(h_θ(x) | θ, θ) − log p̂(h_θ(x) | θ, θ_ref),

so it is trained on exactly those pairs: a run made at θ' ≠ θ_ref gives h_θ' with context (θ', θ'); a run made
at θ_ref gives h_θ with context (θ, θ_ref), θ drawn from the θ of the runs made elsewhere (the data's spread,
e.g. the prior). Pairing each run with its own θ instead would make every statistic of a run at θ_ref
h = t̂·(θ_ref − θ_ref) ≡ 0, a point mass that the ratio never evaluates.
"""

from __future__ import annotations

import math

import torch

from ..data.augmented import AugmentedData
from . import losses
from .base import Estimator
from .likelihood import NDE
from .networks import FlowLikelihood, ScoreNet, Standardize, looks_discrete
from .score_term import ScoreTerm

REFERENCE_SAMPLE = 20_000  # summaries of reference runs kept for the tilt


def made_at(theta: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """[n] bool: the rows of θ [n, p] equal to ``point`` [p] up to float32 rounding (relative 1e-6)."""
    return torch.all((theta - point).abs() <= 1e-6 * (1 + point.abs()), dim=1)


class SALLY(Estimator):
    """Score regression at a reference point θ_ref (Brehmer et al., arXiv:1805.00013), then a density of t̂(x):

        L = E[Σ_j w_j (t̂_j(x) − t_j(x,z|θ_ref))²]   over the runs made at θ_ref,   w_j = 1/Var(t_j),

    minimised by t̂(x) = E[t(x,z|θ_ref) | x] = ∇θ log p(x|θ_ref), the locally sufficient statistic. log r̂ then
    comes from the density of t̂(x) (module notes): local, exact near θ_ref and biased far from it.

    Arguments: ``theta_ref`` [p] (default: the θ1 that every row shares, from ``simulate(...,
    reference=θ_ref)``, or the θ of purely local data from ``prior=sluice.priors.Point(θ_ref)``); ``density``:
    "auto" (conditional where the data allow it, see the module notes), "local" or "conditional"; the network
    and training arguments of ``Estimator`` (``hidden``, ``activation``, ``learning_rate``, ``batch_size``,
    ``epochs``, ``patience``, ``threads``, ``device``).

    >>> import sluice, torch
    >>> simulator = sluice.simulators.GaussianMixture()               # x [n, 2], θ = (a, b)
    >>> theta_ref = torch.tensor([0.0, 0.0])
    >>> data = sluice.simulate(simulator, simulator.default_prior(), n=1000, reference=theta_ref, seed=0)
    >>> sally = sluice.estimators.SALLY().fit(data, epochs=2)
    >>> sally.score(data.x[:5]).shape                                 # t̂(x) at θ_ref, [n, p]
    torch.Size([5, 2])
    >>> sally.log_ratio(data.x[:5], torch.tensor([0.1, 0.0]), theta_ref).shape
    torch.Size([5])
    """

    needs = ("theta0", "theta1", "y", "x", "t_xz0", "t_xz1")

    def __init__(self, theta_ref=None, density: str = "auto", **common):
        super().__init__(**common)
        if density not in ("auto", "local", "conditional"):
            raise ValueError(f"density must be 'auto', 'local' or 'conditional', got {density!r}")
        self.theta_ref = None if theta_ref is None else [float(v) for v in torch.as_tensor(theta_ref).reshape(-1)]
        self.density = density

    def _reference_point(self, data: AugmentedData) -> torch.Tensor:
        if self.theta_ref is not None:
            return torch.tensor(self.theta_ref)
        for candidate in (data.theta1, data.theta):
            if torch.all(candidate == candidate[0]):
                return candidate[0].clone()
        raise ValueError(f"{type(self).__name__} needs runs at one reference point: pass theta_ref, or simulate with "
                         "reference=theta_ref or prior=sluice.priors.Point(theta_ref)")

    def fit(self, data: AugmentedData, epochs=None, batch_size=None, validation_fraction=0.2, seed=0, progress=None):
        """Learn t̂(x) on the runs made at θ_ref, then the density of the summary (module notes)."""
        self._check_data(data)
        reference = self._reference_point(data)
        at_reference = made_at(data.theta, reference)
        if int(at_reference.sum()) < 20:
            raise ValueError(f"{type(self).__name__}: only {int(at_reference.sum())} runs were made at θ_ref = "
                             f"{reference.tolist()}; it needs local data (at least 20 runs there)")
        self.theta_ref_ = reference
        self._all_runs = data
        try:
            return super().fit(data[at_reference], epochs, batch_size, validation_fraction, seed, progress)
        finally:
            del self._all_runs

    def _describe(self, data: AugmentedData) -> dict:
        return {"x": Standardize.fit(data.x).state_dict(), "theta_std": Standardize.fit(self._all_runs.theta).std,
                "theta_ref": self.theta_ref_}

    def _make_model(self, info: dict) -> ScoreNet:
        self.theta_ref_ = info["theta_ref"]
        return ScoreNet(Standardize(info["x"]["mean"], info["x"]["std"]), info["theta_std"], self.hidden,
                        self.activation)

    def _prepare(self, training: AugmentedData) -> None:
        # the regression is the score term alone: α = 1, weights 1/Var(t_j), no clipping
        self.score_term_ = ScoreTerm(alpha=1.0, scale_free=True, clip=None).fit(training, self.model_.theta_std)

    def _tensors(self, data: AugmentedData) -> dict:
        return {"x": data.x, "score_target": self.score_term_.clipped_targets(data)}

    def _loss(self, batch: dict) -> torch.Tensor:
        return self.score_term_(self.model_(batch["x"]), batch["score_target"])

    # --- the density in summary space ------------------------------------------------------------------------
    def _uses_conditional_density(self, data: AugmentedData) -> bool:
        spread = not torch.all(data.theta == data.theta[0])
        if self.density == "conditional" and (not spread or looks_discrete(data.x)):
            raise ValueError(f"{type(self).__name__}: density='conditional' needs continuous x and runs at "
                             "several θ")
        return self.density != "local" and spread and not looks_discrete(data.x)

    def _after_fit(self, training: AugmentedData) -> None:
        with torch.no_grad():
            self.reference_summaries_ = self.model_(training.x[:REFERENCE_SAMPLE])
        everything = self._all_runs
        self.density_ = None
        if self._uses_conditional_density(everything):
            self.density_ = self._fit_density(everything)

    def _second_stage(self) -> dict:
        """The density stage trains with fit's ``epochs`` (else the constructor's) and fit's ``seed``."""
        return {"epochs": self._fit_request["epochs"] or self.epochs, "seed": self._fit_request["seed"]}

    def _fit_density(self, data: AugmentedData):
        summaries = self._summaries(data.x)
        summary_data = AugmentedData._trusted(dict(data.fields(), x=summaries), data.parameter_names, None)
        # a spline flow here, not NDE's default MAF: on the mixture's summaries t̂(x) a 5-transform MAF gave
        # log r̂ errors 50 times those of this flow (nMSE 9.4 against 0.15)
        return NDE(density="flow", flow="nsf", transforms=2, hidden=self.hidden, epochs=self.epochs).fit(
            summary_data, progress=False, **self._second_stage())

    def log_ratio(self, x, theta0, theta1) -> torch.Tensor:
        """log r̂(x | θ0, θ1) [n], from the density of t̂(x) (module notes)."""
        x, theta0, theta1 = self._inputs(x, theta0, theta1)
        summary = self._summaries(x)
        if self.density_ is not None:
            return self.density_.log_ratio(summary, theta0, theta1)
        return self._tilted_log_ratio(summary, theta0, theta1)

    def _log_normaliser(self, theta: torch.Tensor) -> torch.Tensor:
        """log Ẑ(θ) = log mean_i exp(t̂(x_i)·(θ − θ_ref)) over the reference runs, [n]."""
        def one_chunk(theta_part):
            exponent = (theta_part - self.theta_ref_) @ self.reference_summaries_.T
            return torch.logsumexp(exponent, dim=1) - math.log(self.reference_summaries_.shape[0])

        return self._chunked(one_chunk, theta)

    def _tilted_log_ratio(self, summary, theta0, theta1):
        return (summary * (theta0 - theta1)).sum(dim=1) - self._log_normaliser(theta0) + self._log_normaliser(theta1)

    def score(self, x, theta=None) -> torch.Tensor:
        """t̂(x) [n, p], the estimated score at θ_ref (``theta`` is accepted for the common signature)."""
        return self._summaries(self._inputs(x)[0])

    def _summaries(self, x: torch.Tensor) -> torch.Tensor:
        """t̂(x) [n, p] for a batch of runs, without a graph."""
        with torch.no_grad():
            return self._chunked(self.model_, x)

    # --- storage -----------------------------------------------------------------------------------------------
    def _state(self) -> dict:
        state = super()._state()
        state["reference_summaries"] = self.reference_summaries_
        state["density"] = None if self.density_ is None else self.density_._state()
        return state

    def _restore(self, state: dict) -> None:
        self.reference_summaries_ = state["reference_summaries"]
        self.density_ = None if state["density"] is None else self._density_class()._from_state(state["density"])

    @staticmethod
    def _density_class():
        return NDE


class SALLINO(SALLY):
    """SALLY's score regression (the same loss and arguments), then per θ the 1-D density of the statistic
    h_θ(x) = t̂(x)·(θ − θ_ref) (module notes):

        log r̂(x|θ, θ_ref) = log p̂(h_θ(x) | θ) − log p̂(h_θ(x) | θ_ref),
        log r̂(x|θ0, θ1)   = log r̂(x|θ0, θ_ref) − log r̂(x|θ1, θ_ref).

    >>> import sluice, torch
    >>> simulator = sluice.simulators.GaussianMixture()
    >>> theta_ref = torch.tensor([0.0, 0.0])
    >>> data = sluice.simulate(simulator, simulator.default_prior(), n=1000, reference=theta_ref, seed=0)
    >>> sallino = sluice.estimators.SALLINO().fit(data, epochs=2)
    >>> sallino.log_ratio(data.x[:5], torch.tensor([0.1, 0.0]), theta_ref).shape
    torch.Size([5])
    """

    def _fit_density(self, data: AugmentedData):
        summaries = self._summaries(data.x)
        return StatisticDensity(self.theta_ref_, hidden=self.hidden, epochs=self.epochs).fit_summaries(
            summaries, data, **self._second_stage())

    def log_ratio(self, x, theta0, theta1) -> torch.Tensor:
        x, theta0, theta1 = self._inputs(x, theta0, theta1)
        summary = self._summaries(x)
        if self.density_ is None:
            return self._tilted_log_ratio(summary, theta0, theta1)
        return self.density_.log_ratio_to_reference(summary, theta0) - \
            self.density_.log_ratio_to_reference(summary, theta1)

    @staticmethod
    def _density_class():
        return StatisticDensity


class StatisticDensity(Estimator):
    """The conditional 1-D density p̂(h | θ, θ') of h = t̂(x)·(θ − θ_ref) for runs made at θ' (a flow).

    Trained on the contexts SALLINO's ratio reads (module notes): a run made at θ' ≠ θ_ref contributes
    (h_θ'(x), θ', θ'); a run made at θ_ref contributes (h_θ(x), θ, θ_ref), θ drawn with replacement from the θ of
    the runs made elsewhere, afresh for every training batch (torch's global generator, which ``fit`` seeds) and
    once for the validation rows, so that early stopping compares like with like.
    """

    def __init__(self, theta_ref=None, activation: str = "elu", batch_size: int = 256, **common):
        super().__init__(activation=activation, batch_size=batch_size, **common)
        self.theta_ref = theta_ref if theta_ref is None else torch.as_tensor(theta_ref).reshape(-1).tolist()

    def fit_summaries(self, summaries: torch.Tensor, data: AugmentedData, epochs=None, seed: int = 0):
        """Fit on runs x (made at data.theta) through their summaries t̂(x)."""
        return self.fit(AugmentedData._trusted(dict(data.fields(), x=summaries), data.parameter_names, None),
                        epochs=epochs, seed=seed, progress=False)

    def _theta_pool(self, data: AugmentedData) -> torch.Tensor:
        """The θ [m, p] of the runs not made at θ_ref: where the statistic's θ is drawn for the runs at θ_ref."""
        pool = data.theta[~made_at(data.theta, torch.tensor(self.theta_ref))]
        if len(pool) == 0:
            raise ValueError("StatisticDensity needs runs made away from θ_ref: the statistic's θ is drawn from them")
        return pool

    def _draw_theta(self, count: int) -> torch.Tensor:
        """``count`` rows [count, p] drawn with replacement from the pool, with torch's global generator."""
        return self.theta_pool_[torch.randint(len(self.theta_pool_), (count,))]

    def _statistic_theta(self, theta_made: torch.Tensor) -> torch.Tensor:
        """θ of the statistic [n, p] for runs made at ``theta_made`` [n, p]: the run's own θ, or a draw at θ_ref."""
        at_reference = made_at(theta_made, torch.tensor(self.theta_ref))
        return torch.where(at_reference[:, None], self._draw_theta(len(theta_made)), theta_made)

    def _describe(self, data: AugmentedData) -> dict:
        self.theta_pool_ = self._theta_pool(data)
        theta_statistic = self._statistic_theta(data.theta)
        statistic = (data.x * (theta_statistic - torch.tensor(self.theta_ref))).sum(dim=1, keepdim=True)
        # context = (θ of the statistic, θ the run was made at), each standardised by its own spread
        statistic_scale, made_scale = Standardize.fit(self.theta_pool_), Standardize.fit(data.theta)
        context = Standardize(torch.cat([statistic_scale.mean, made_scale.mean]),
                              torch.cat([statistic_scale.std, made_scale.std]))
        return {"h": Standardize.fit(statistic).state_dict(), "context": context.state_dict()}

    def _make_model(self, info: dict) -> FlowLikelihood:
        h_scale = Standardize(info["h"]["mean"], info["h"]["std"])
        context = Standardize(info["context"]["mean"], info["context"]["std"])
        return FlowLikelihood(h_scale, context, self.hidden, self.activation, transforms=2)

    def _tensors(self, data: AugmentedData) -> dict:
        theta_made = data.theta
        return {"summary": data.x, "theta_made": theta_made, "theta_statistic": self._statistic_theta(theta_made),
                "at_reference": made_at(theta_made, torch.tensor(self.theta_ref))}

    def _loss(self, batch: dict) -> torch.Tensor:
        theta_made, theta_statistic = batch["theta_made"], batch["theta_statistic"]
        if self.model_.training:  # a fresh θ for each run at θ_ref in every batch: more (θ, x) pairs seen
            fresh = self._draw_theta(len(theta_made)).to(theta_made.device)
            theta_statistic = torch.where(batch["at_reference"][:, None], fresh, theta_statistic)
        reference = torch.tensor(self.theta_ref, device=theta_made.device)
        h = (batch["summary"] * (theta_statistic - reference)).sum(dim=1, keepdim=True)
        return losses.negative_log_likelihood(self.model_(h, torch.cat([theta_statistic, theta_made], dim=1)))

    def _after_fit(self, training: AugmentedData) -> None:
        del self.theta_pool_  # only training draws from it

    def log_ratio_to_reference(self, summary: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """log p̂(h_θ | θ, θ) − log p̂(h_θ | θ, θ_ref) [n]."""
        reference = torch.tensor(self.theta_ref).expand_as(theta)
        h = (summary * (theta - reference)).sum(dim=1, keepdim=True)
        with torch.no_grad():
            return self.model_(h, torch.cat([theta, theta], dim=1)) - self.model_(h, torch.cat([theta, reference],
                                                                                                 dim=1))
