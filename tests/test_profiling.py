"""Profiling, maximum likelihood and the Neyman statistic against a linear-Gaussian model, x ~ N(Aθ, Σ), whose
conditional maxima, profile likelihood and MLE have closed forms.

For n events with weights w_i (W = Σ w_i, x̄ = Σ w_i x_i / W), up to a constant in θ,

    ℓ(θ) = Σ_i w_i log p(x_i|θ) = W (bᵀθ − ½ θᵀFθ),     b = AᵀΣ⁻¹x̄,   F = AᵀΣ⁻¹A,

so the MLE is θ̂ = F⁻¹b, and with θ = (ψ, ν) split into interest and nuisance the conditional maximum is
ν̂(ψ) = F_νν⁻¹ (b_ν − F_νψ ψ) (inside the nuisance box, which each test checks first).

The model appears in two forms: "differentiable" (log r computed in float64 with the graph to θ kept) and
"detached" (θ rounded to float32, no graph, the result rounded to float32: what trained estimators and
``ExactLikelihood`` hand back), so both the autograd and the finite-difference paths are checked.
"""

import math

import pytest
import torch

import sluice
from sluice import inference
from sluice.inference.evaluate import FINITE_DIFFERENCE_STEP, ExperimentLogRatio

FLOAT32_EPSILON = 2.0**-24  # the relative rounding of one float32 value

EVENTS = 200


def ar1_covariance(d: int, rho: float = 0.4) -> torch.Tensor:
    """Σ_ij = ρ^|i−j|: correlated noise, so the precision matrix is not diagonal."""
    index = torch.arange(d, dtype=torch.float64)
    return rho ** (index[:, None] - index[None, :]).abs()


class LinearGaussian:
    """x ~ N(Aθ, Σ) behind the estimator interface: ``parameter_names_`` and the exact
    ``log_ratio(x, θ0, θ1) = log p(x|θ0) − log p(x|θ1)`` [n]; ``sample`` makes it a simulator too."""

    def __init__(self, names, matrix, differentiable: bool):
        self.parameter_names_ = tuple(names)
        self.matrix = torch.as_tensor(matrix, dtype=torch.float64)                         # A [d, p]
        self.covariance = ar1_covariance(self.matrix.shape[0])                            # Σ [d, d]
        self.precision = torch.linalg.inv(self.covariance)
        self.cholesky = torch.linalg.cholesky(self.covariance)
        self.differentiable = differentiable

    def _log_density(self, x, theta):
        """log p(x|θ) up to a constant: [n], in float64."""
        residual = x.to(torch.float64) - theta.to(torch.float64) @ self.matrix.T
        return -0.5 * ((residual @ self.precision) * residual).sum(dim=1)

    def log_ratio(self, x, theta0, theta1):
        x = torch.as_tensor(x)
        theta0 = torch.as_tensor(theta0).expand(x.shape[0], -1)
        theta1 = torch.as_tensor(theta1).expand(x.shape[0], -1)
        if self.differentiable:
            return self._log_density(x, theta0) - self._log_density(x, theta1)
        with torch.no_grad():
            theta0, theta1 = theta0.to(torch.float32), theta1.to(torch.float32)
            return (self._log_density(x, theta0) - self._log_density(x, theta1)).to(torch.float32)

    def sample(self, theta, generator=None):
        theta = torch.as_tensor(theta, dtype=torch.float64)
        noise = torch.randn(theta.shape[0], self.matrix.shape[0], generator=generator, dtype=torch.float64)
        return (theta @ self.matrix.T + noise @ self.cholesky.T).to(torch.float32), {}

    # --- closed forms ------------------------------------------------------------------------------------------
    def sufficient(self, x, weights=None):
        """(W, b, F) of the module notes."""
        x = torch.as_tensor(x, dtype=torch.float64)
        weights = torch.ones(x.shape[0], dtype=torch.float64) if weights is None else \
            torch.as_tensor(weights, dtype=torch.float64)
        total = float(weights.sum())
        mean = (weights[:, None] * x).sum(dim=0) / total
        return total, self.matrix.T @ self.precision @ mean, self.matrix.T @ self.precision @ self.matrix

    def log_likelihood(self, theta, x, weights=None):
        """ℓ(θ) = W (bᵀθ − ½ θᵀFθ) for θ [G, p]: [G]."""
        total, b, fisher = self.sufficient(x, weights)
        theta = torch.as_tensor(theta, dtype=torch.float64)
        return total * (theta @ b - 0.5 * ((theta @ fisher) * theta).sum(dim=1))

    def mle(self, x, weights=None):
        _, b, fisher = self.sufficient(x, weights)
        return torch.linalg.solve(fisher, b)

    def conditional_maximum(self, psi, interest, nuisance, x, weights=None):
        """ν̂(ψ) = F_νν⁻¹ (b_ν − F_νψ ψ) for ψ [G, k]: [G, p − k]."""
        _, b, fisher = self.sufficient(x, weights)
        psi = torch.as_tensor(psi, dtype=torch.float64)
        right = b[nuisance][None, :] - psi @ fisher[nuisance][:, interest].T
        return torch.linalg.solve(fisher[nuisance][:, nuisance], right.T).T

    def full(self, psi, nu, interest, nuisance):
        theta = torch.empty(psi.shape[0], len(interest) + len(nuisance), dtype=torch.float64)
        theta[:, interest], theta[:, nuisance] = torch.as_tensor(psi, dtype=torch.float64), nu
        return theta


# A [d, p]: every parameter moves several components of x, so the nuisance parameters' conditional maxima
# depend on the parameter of interest
MATRICES = {
    2: [[1.0, 0.5, 0.0], [0.3, 1.0, 0.4], [0.0, 0.6, 1.0], [0.5, 0.0, 0.7]],
    3: [[1.0, 0.5, 0.0, 0.2], [0.3, 1.0, 0.4, 0.0], [0.0, 0.6, 1.0, 0.3], [0.5, 0.0, 0.7, 1.0],
        [0.2, 0.3, 0.0, 0.8]],
}
TRUTH = [0.2, -0.3, 0.4, 0.1]
NAMES = ["a", "b", "c", "d"]
GRID_A = torch.linspace(-0.4, 0.8, 13)[:, None]  # the parameter of interest a: the MLE ± about 4σ
NUISANCE_BOUNDS = (-1.0, 1.0)


def make_model(n_nuisance: int, differentiable: bool) -> LinearGaussian:
    return LinearGaussian(NAMES[: n_nuisance + 1], MATRICES[n_nuisance], differentiable)


def observed(model: LinearGaussian, seed: int = 0) -> torch.Tensor:
    theta = torch.tensor(TRUTH[: len(model.parameter_names_)]).expand(EVENTS, -1)
    return model.sample(theta, torch.Generator().manual_seed(seed))[0]


def rounding(model: LinearGaussian, x, weights=None) -> float:
    """ε: how far a float32 evaluation of ℓ(θ) = Σ_i w_i log r(x_i|θ, θ') can be off, anywhere in [−1, 1]^p.

    Each event's value is rounded once, and so is θ (to float32): with |log p(x_i|θ)| and |∇θ log p(x_i|θ)|₁
    bounded by their largest values at the corners of the box (both are convex in θ), that is at most
    2⁻²⁴ Σ_i w_i (2 max|log p_i| + max|∇ log p_i|₁), and a float32 sum or result adds at most as much again."""
    p = model.matrix.shape[1]
    corners = torch.tensor([[1.0 if (k >> j) & 1 else -1.0 for j in range(p)] for k in range(2**p)],
                           dtype=torch.float64)
    weights = torch.ones(len(x), dtype=torch.float64) if weights is None else torch.as_tensor(weights).double()
    values, slopes = [], []
    for corner in corners:
        theta = corner.expand(len(x), -1).clone().requires_grad_(True)
        log_p = model._log_density(x, theta)
        (gradient,) = torch.autograd.grad(log_p.sum(), theta)
        values.append(log_p.detach().abs())
        slopes.append(gradient.abs().sum(dim=1))
    per_event = 2 * torch.stack(values).max(dim=0).values + torch.stack(slopes).max(dim=0).values
    return 2 * FLOAT32_EPSILON * float((weights * per_event).sum())


def tolerances(model: LinearGaussian, x, free, weights=None) -> tuple[float, float]:
    """(on θ_free, on ℓ) for a maximisation over the parameters ``free`` with ℓ known to ε (``rounding``):
    a maximum is located only to δ with ½ W λ_min(F_free) δ² = ε, and its value is off by at most
    ε + ½ W λ_max(F_free) δ². Both are far below the statistical errors (σ ≈ 0.1 on θ) and the defects'
    errors (0.7 on ν)."""
    total, _, fisher = model.sufficient(x, weights)
    epsilon = rounding(model, x, weights)
    eigenvalues = torch.linalg.eigvalsh(fisher[free][:, free])
    delta = math.sqrt(2 * epsilon / (total * float(eigenvalues.min())))
    return delta, epsilon + 0.5 * total * float(eigenvalues.max()) * delta**2


def nuisance_bounds(n_nuisance: int) -> dict:
    return {name: NUISANCE_BOUNDS for name in NAMES[1:n_nuisance + 1]}


@pytest.mark.parametrize("differentiable", [True, False], ids=["differentiable", "detached"])
@pytest.mark.parametrize("n_nuisance", [2, 3])
def test_profiled_nuisance_parameters_and_profile_likelihood_equal_the_closed_forms(n_nuisance, differentiable):
    model = make_model(n_nuisance, differentiable)
    x = observed(model)
    interest, nuisance = [0], list(range(1, n_nuisance + 1))
    exact_nu = model.conditional_maximum(GRID_A, interest, nuisance, x)
    assert torch.all(exact_nu.abs() < NUISANCE_BOUNDS[1])  # the closed form holds: the maxima are inside the box
    on_nu, on_ell = tolerances(model, x, nuisance)

    profiled = inference.profile_scan(model, x, GRID_A, ["a"], nuisance_bounds(n_nuisance))

    assert profiled.nuisance.shape == (len(GRID_A), n_nuisance)
    assert (profiled.nuisance.double() - exact_nu).abs().max() <= on_nu
    # q(ψ) = −2 [ℓ(ψ, ν̂(ψ)) − ℓ(θ̂)]: the profile likelihood and the global maximum both enter
    exact_profile = model.log_likelihood(model.full(GRID_A, exact_nu, interest, nuisance), x)
    exact_q = -2 * (exact_profile - model.log_likelihood(model.mle(x)[None], x))
    assert (profiled.q.double() - exact_q).abs().max() <= 4 * on_ell
    on_theta, _ = tolerances(model, x, interest + nuisance)
    assert float(profiled.mle[0]) == pytest.approx(float(model.mle(x)[0]), abs=on_theta)


@pytest.mark.parametrize("n_nuisance", [2, 3])
def test_a_profiled_scan_is_never_below_a_fixed_nuisance_scan(n_nuisance):
    model = make_model(n_nuisance, differentiable=False)
    x = observed(model, seed=1)
    interest, nuisance = [0], list(range(1, n_nuisance + 1))
    _, on_ell = tolerances(model, x, nuisance)
    profiled = inference.profile_scan(model, x, GRID_A, ["a"], nuisance_bounds(n_nuisance))
    profile = model.log_likelihood(model.full(GRID_A, profiled.nuisance.double(), interest, nuisance), x)
    # every fixed ν on a coarse lattice over the nuisance box, including the box's middle (where the
    # optimiser used to stay)
    lattice = inference.make_grid([-0.75] * n_nuisance, [0.75] * n_nuisance, 3).double()
    for nu in lattice:
        fixed = model.log_likelihood(model.full(GRID_A, nu.expand(len(GRID_A), -1), interest, nuisance), x)
        shortfall = float((fixed - profile).max())  # how far the profile falls below this fixed-ν scan
        assert shortfall <= on_ell, f"the profile is {shortfall:.3g} below the scan at ν = {nu.tolist()}"


def test_a_weighted_profile_counts_the_weights_and_maximises_the_weighted_likelihood():
    model = make_model(2, differentiable=False)
    x = observed(model, seed=2)
    weights = torch.linspace(0.1, 0.5, EVENTS)  # Σ w = 60 events' worth, not len(x) = 200
    interest, nuisance = [0], [1, 2]
    exact_nu = model.conditional_maximum(GRID_A, interest, nuisance, x, weights)
    assert torch.all(exact_nu.abs() < NUISANCE_BOUNDS[1])
    on_nu, _ = tolerances(model, x, nuisance, weights)
    profiled = inference.profile_scan(model, x, GRID_A, ["a"], {"b": NUISANCE_BOUNDS, "c": NUISANCE_BOUNDS},
                                      weights=weights)
    assert profiled.n_events == pytest.approx(float(weights.sum()), rel=1e-6)
    assert (profiled.nuisance.double() - exact_nu).abs().max() <= on_nu


def test_profiling_a_parameter_against_one_nuisance_parameter_still_works():
    model = LinearGaussian(["a", "b"], [[1.0, 0.5], [0.3, 1.0], [0.4, 0.2]], differentiable=False)
    x = model.sample(torch.tensor([0.2, -0.3]).expand(EVENTS, -1), torch.Generator().manual_seed(3))[0]
    exact_nu = model.conditional_maximum(GRID_A, [0], [1], x)
    on_nu, _ = tolerances(model, x, [1])
    profiled = inference.profile_scan(model, x, GRID_A, ["a"], {"b": NUISANCE_BOUNDS})
    assert (profiled.nuisance.double() - exact_nu).abs().max() <= on_nu


@pytest.mark.parametrize("differentiable", [True, False], ids=["differentiable", "detached"])
def test_the_refined_mle_of_a_scan_over_several_parameters_is_the_exact_mle(differentiable):
    model = make_model(3, differentiable)
    x = observed(model, seed=4)
    grid = inference.make_grid([-1.0] * 4, [1.0] * 4, 5)  # spacing 0.5: the grid point alone is off by up to 0.25
    exact = model.mle(x)
    assert torch.all(exact.abs() < 1.0)
    on_theta, on_ell = tolerances(model, x, [0, 1, 2, 3])
    result = inference.scan(model, x, grid)
    assert (result.mle.double() - exact).abs().max() <= on_theta
    # the reported maximum equals the exact one on the scan's own scale (ℓ relative to the grid's values)
    exact_gap = model.log_likelihood(exact[None], x) - model.log_likelihood(grid, x)
    assert (result.max_log_likelihood_ratio - result.log_likelihood_ratio.double() - exact_gap).abs().max() \
        <= 2 * on_ell


class Replay:
    """A "simulator" whose every run is the observed data set again (θ ignored): each toy of a Neyman
    construction is then the observed experiment, so its threshold at θ_g is the observed statistic at θ_g."""

    def __init__(self, x, n_events):
        self.x, self.n_events = x, n_events

    def sample(self, theta, generator=None):
        return self.x.repeat(theta.shape[0] // self.n_events, 1), {}


def replayed_neyman_setup():
    model = LinearGaussian(["a", "b"], [[1.0, 0.5], [0.3, 1.0], [0.4, 0.2]], differentiable=False)
    x = model.sample(torch.tensor([0.2, -0.3]).expand(EVENTS, -1), torch.Generator().manual_seed(5))[0]
    grid = inference.make_grid([-1.0, -1.0], [1.0, 1.0], 5)  # coarse: the refined maximum lies off the grid
    return model, x, grid, tolerances(model, x, [0, 1])[1]


def test_neyman_thresholds_use_the_statistic_of_the_observed_scan():
    model, x, grid, on_ell = replayed_neyman_setup()
    result = inference.scan(model, x, grid)
    # the off-grid maximum raises the observed q everywhere: thresholds of the grid statistic would be lower
    assert result.max_log_likelihood_ratio - float(result.log_likelihood_ratio.max()) > 10 * on_ell
    thresholds = inference.neyman_thresholds(model, Replay(x, EVENTS), grid, EVENTS, level=0.68, n_toys=3)
    assert (thresholds.double() - result.q.double()).abs().max() <= 4 * on_ell


def test_neyman_thresholds_without_refinement_use_the_grid_statistic_of_an_unrefined_scan():
    model, x, grid, on_ell = replayed_neyman_setup()
    result = inference.scan(model, x, grid, refine=False)
    thresholds = inference.neyman_thresholds(model, Replay(x, EVENTS), grid, EVENTS, level=0.68, n_toys=3,
                                             refine=False)
    assert (thresholds.double() - result.q.double()).abs().max() <= 4 * on_ell


def test_neyman_thresholds_at_the_truth_follow_chi2_for_the_linear_gaussian_model():
    """q(θ_true) is exactly χ²_p for a linear-Gaussian model (the MLE inside the box): the thresholds at
    interior grid points, averaged, are the χ²_2 quantile within 5 standard errors of the toys' quantiles."""
    model = LinearGaussian(["a", "b"], [[1.0, 0.5], [0.3, 1.0], [0.4, 0.2]], differentiable=True)
    n_events, n_toys, level = 50, 200, 0.68
    grid = inference.make_grid([-1.0, -1.0], [1.0, 1.0], 5)  # σ(θ̂) ≈ 0.2: the 3×3 interior is 2.5σ from the edges
    thresholds = inference.neyman_thresholds(model, model, grid, n_events, level=level, n_toys=n_toys, seed=6)
    interior = (grid.abs() < 0.9).all(dim=1)
    quantile = inference.wilks_threshold(level, 2)
    density = 0.5 * math.exp(-quantile / 2)  # χ²_2 density at its quantile
    error = math.sqrt(level * (1 - level) / n_toys) / density / math.sqrt(int(interior.sum()))
    assert abs(float(thresholds[interior].mean()) - quantile) <= 5 * error


@pytest.mark.parametrize("differentiable", [True, False], ids=["differentiable", "detached"])
def test_the_gradient_of_each_experiment_is_the_closed_form(differentiable):
    """∂ℓ_t/∂θ_t = W (b_t − F θ_t) for two experiments at two θ: autograd for the differentiable model; central
    differences for the detached one, exact for a quadratic ℓ but for rounding, ε/step for values off by ε."""
    model = make_model(2, differentiable)
    first, second = observed(model, seed=7), observed(model, seed=8)
    thetas = torch.tensor([[0.1, -0.2, 0.3], [-0.4, 0.5, 0.0]], dtype=torch.float64)
    bounds = [(-1.0, 1.0)] * 3
    objective = ExperimentLogRatio(model, torch.cat([first, second]), 2, torch.zeros(3), None)
    _, gradient, _ = objective(thetas, bounds=bounds)
    for t, x in enumerate((first, second)):
        total, b, fisher = model.sufficient(x)
        exact = total * (b - fisher @ thetas[t])
        limit = 1e-9 * float(exact.abs().max()) if differentiable else \
            2 * rounding(model, x) / (FINITE_DIFFERENCE_STEP * 2.0)
        assert (gradient[t] - exact).abs().max() <= limit


def test_the_gradient_of_a_potential_model_is_the_sum_of_its_scores():
    """A trained ratio estimator's log_ratio runs under no_grad; the objective differentiates its network
    g(x, θ) instead, so its gradient is Σ_i ∇θ g(x_i, θ) = Σ_i t̂(x_i|θ), the estimator's own score (the same
    float32 backward pass per event, summed in float64: equal up to the order of a float64 sum)."""
    mixture = sluice.simulators.GaussianMixture()
    estimator = sluice.estimators.ALICES(hidden=(32, 32)).fit(
        sluice.simulate(mixture, mixture.default_prior(), 1000, seed=0), epochs=2, progress=False)
    x = mixture.sample(torch.tensor([0.3, -0.2]).expand(300, -1), torch.Generator().manual_seed(1))[0]
    theta = torch.tensor([[0.25, -0.1]], dtype=torch.float64)
    for parameter in estimator.model_.parameters():
        parameter.grad = None
    _, gradient, _ = ExperimentLogRatio(estimator, x, 1, torch.zeros(2))(theta)
    scores = estimator.score(x, theta[0].float()).double()
    assert torch.allclose(gradient[0], scores.sum(dim=0), rtol=0, atol=1e-12 * float(scores.abs().sum()))
    assert all(parameter.grad is None for parameter in estimator.model_.parameters())  # the network is untouched
