"""Histogram baselines (sluice.inference.histograms): bins, expected counts exact at every θ by morphing,
HistFactory's systematics, the binned likelihood behind the scans, and the outside check against pyhf."""

from __future__ import annotations

import math

import pytest
import torch

import sluice
from sluice.data.weighted_events import WeightedEvents
from sluice.inference import profile_scan, scan
from sluice.inference.histograms import BinnedModel, Binning, HistogramModel, Sample
from sluice.inference.limits import BinnedData, hypotest, upper_limit
from sluice.simulators.systematics import Nuisance

TOY = sluice.simulators.ParticleToy()
MORPHING = TOY.morphing()
SM = torch.zeros(2)
SIGNAL_POINT = [0.5, 0.0]  # c1 > 0 raises dσ everywhere: a positive signal in every bin
ENERGY_SCALE = torch.tensor([1.03, 1.0])  # the ±1σ energy-scale variation of the histosys


@pytest.fixture(scope="module")
def generated():
    """20 000 weighted events generated at the SM (weights at the six basis points), their parton-level z, and
    100 observed events at the SM."""
    x, z = TOY.sample(SM.expand(20_000, 2), generator=torch.Generator().manual_seed(0))
    weights = TOY.event_weights(z["parton"], MORPHING.basis_points, generated_at=SM)
    observed, _ = TOY.sample(SM.expand(100, 2), generator=torch.Generator().manual_seed(5))
    return WeightedEvents(x, weights, MORPHING), z["parton"], observed


def luminosity_for(n_events: float) -> float:
    return n_events / float(TOY.cross_section(SM.reshape(1, 2).double())[0])


def model_with_systematics(events: WeightedEvents, **options) -> HistogramModel:
    """A histosys (the energy scale ±3 %: the same events with x rescaled) and a normsys (luminosity ±3 %)."""
    down = WeightedEvents(events.x / ENERGY_SCALE, events.basis_weights, MORPHING)
    up = WeightedEvents(events.x * ENERGY_SCALE, events.basis_weights, MORPHING)
    return HistogramModel(events, luminosity_for(100.0), bins=(3, 2), histosys={"energy_scale": (down, up)},
                          normsys={"lumi": (0.97, 1.03)}, nuisances=[Nuisance("energy_scale"), Nuisance("lumi")],
                          **options)


def test_equal_population_bins_hold_equal_shares_of_the_weight():
    """Each bin of ``Binning.equal_population`` holds 1/B of Σ w, to the weight of the one event an edge falls on."""
    values = -torch.log(torch.rand(5000, generator=torch.Generator().manual_seed(1), dtype=torch.float64))  # Exp(1)
    weights = torch.rand(5000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    binning = Binning.equal_population(values, bins=8, weights=weights)
    shares = binning.histogram(values, weights) / weights.sum()
    assert binning.n_bins == 8
    assert torch.all((shares - 1 / 8).abs() <= weights.max() / weights.sum())


def test_expected_counts_are_exact_at_every_theta(generated):
    """ν_k(θ) = L Σ_{i in k} w_i(θ) from the morphed templates equals the sum of the weights the generator gives at
    θ directly (``ParticleToy.event_weights`` at θ, no morphing), to float64 rounding, at θ far from the basis."""
    events, parton, _ = generated
    model = HistogramModel(events, luminosity_for(100.0), bins=(4, 3))
    thetas = torch.tensor([[0.37, -0.81], [-0.9, 0.6], [0.05, 0.02]], dtype=torch.float64)
    direct = TOY.event_weights(parton, thetas, generated_at=SM)  # [n, 3], one column per θ
    index = model.binning.index(model.observe(events.x))
    for g in range(thetas.shape[0]):
        binned = model.luminosity * torch.zeros(model.binning.n_bins, dtype=torch.float64).index_add_(0, index,
                                                                                                     direct[:, g])
        assert torch.allclose(model.expected(thetas[g:g + 1])[0], binned, rtol=1e-10)
    assert torch.allclose(model.cross_section(thetas), TOY.cross_section(thetas), rtol=0.05)  # the sample's σ


def test_systematics_reproduce_their_variations_and_the_signal_strength_is_exact(generated):
    """At α = ±1 a histosys gives its variation's counts and a normsys multiplies by its factor; the signal-strength
    model at μ = 1 is the θ model at θ_s and at μ = 0 the one at θ_b, at any α."""
    events, _, _ = generated
    model = model_with_systematics(events)
    theta = torch.tensor(SIGNAL_POINT, dtype=torch.float64)
    down, up = model.histosys["energy_scale"]
    coefficients = MORPHING.monomials(theta[None])
    for alpha, templates in ((-1.0, down), (1.0, up)):
        varied = model.expected(torch.cat([theta, torch.tensor([alpha, 0.0], dtype=torch.float64)])[None])
        assert torch.allclose(varied, coefficients @ templates.T, rtol=1e-12)
    for alpha, factor in ((-1.0, 0.97), (1.0, 1.03)):
        scaled = model.expected(torch.cat([theta, torch.tensor([0.0, alpha], dtype=torch.float64)])[None])
        assert torch.allclose(scaled, factor * model.expected(theta[None]), rtol=1e-12)
    binned = model.signal_strength_model(SIGNAL_POINT)
    alphas = torch.tensor([[0.4, -1.3], [-2.2, 0.7]], dtype=torch.float64)
    for mu, point in ((1.0, theta), (0.0, SM.double())):
        thetas = torch.cat([point.expand(2, -1), alphas], dim=1)
        assert torch.allclose(binned.expected(torch.full((2,), mu), alphas), model.expected(thetas), rtol=1e-12)


def test_binned_scan_is_the_binned_poisson_likelihood(generated):
    """``scan(model, x, grid, rate=model.rate())``: the shape of each event's bin plus the rate term is Σ_k log
    Poisson(n_k | ν_k(θ)) + Σ_j log c_j(α_j) up to a constant (the multinomial coefficient), at every grid point
    including nuisance values."""
    events, _, observed = generated
    model = model_with_systematics(events)
    grid = torch.tensor([[c1, c2, a, b] for c1 in (-0.4, 0.0, 0.3) for c2 in (-0.5, 0.5) for a, b in
                         ((0.0, 0.0), (0.8, -1.1))])
    reference = grid.shape[0] // 2
    for auxiliary in (None, [0.4, -0.7]):  # nominal, and other auxiliary measurements of (energy_scale, lumi)
        result = scan(model, observed, grid, refine=False, rate=model.rate(auxiliary=auxiliary))
        binned = model.binned_log_likelihood(model.counts(observed), grid.double(), auxiliary)
        assert torch.allclose(result.log_likelihood_ratio.double(), binned - binned[reference], rtol=1e-6, atol=1e-5)


def test_profiled_nuisances_of_the_event_scan_equal_the_binned_fit(generated):
    """Profiling the nuisance parameters with ``profile_scan(model, x, ..., rate=model.rate())`` at θ_s finds the
    α of the ``BinnedModel`` fit at μ = 1 on the same counts: the two routes maximise one likelihood."""
    events, _, observed = generated
    model = model_with_systematics(events)
    profiled = profile_scan(model, observed, torch.tensor([SIGNAL_POINT]), ["c1", "c2"],
                            {"energy_scale": (-5.0, 5.0), "lumi": (-5.0, 5.0)}, rate=model.rate())
    fit = model.signal_strength_model(SIGNAL_POINT).fit(BinnedData(model.counts(observed)), 1.0)
    assert torch.allclose(profiled.nuisance[0].double(), fit.nuisance[0], atol=1e-3)


def test_a_fitted_sally_score_serves_as_the_observable(generated):
    """Any callable x → [n, k ≤ 2] is an observable, such as SALLY's t̂(x) (here the exact score at the SM, what
    SALLY estimates): the bins are equal-population in t̂ and the counts still sum to L σ."""
    events, _, _ = generated
    exact = sluice.inference.ExactLikelihood(TOY)
    model = HistogramModel(events, luminosity_for(100.0), bins=(3, 3), observable=lambda x: exact.score(x, SM))
    assert model.binning.n_bins == 9
    theta = torch.tensor([0.2, 0.3], dtype=torch.float64)
    totals = model.expected(theta[None]).sum()
    assert float(totals) == pytest.approx(model.luminosity * float(events.cross_section(theta)), rel=1e-10)


# --- the outside check: pyhf ---------------------------------------------------------------------------------
def pyhf_or_skip():
    return pytest.importorskip("pyhf", reason="pyhf is not installed: pip install \"sluice-sbi[hep]\"")


@pytest.mark.parametrize("systematics", [False, True], ids=["no modifiers", "normsys and histosys"])
def test_cls_limits_and_p_values_equal_pyhf(generated, systematics):
    """sluice's CLs (q̃_μ, asymptotics) against pyhf's on the same counts and the exported workspace: pyhf's
    expected counts equal ours at arbitrary parameters (its interpolation codes are ours); the p-values p_μ, CL_b,
    CLs and the expected CLs band agree to 10⁻³ relative at several μ; the observed upper limit (pyhf's CLs
    solved for 5 % by Brent's method) agrees within 1 %."""
    pyhf = pyhf_or_skip()
    from scipy import optimize

    events, _, observed = generated
    model = model_with_systematics(events) if systematics else HistogramModel(events, luminosity_for(100.0),
                                                                               bins=(3, 2))
    binned = model.signal_strength_model(SIGNAL_POINT)
    counts = model.counts(observed)
    pyhf.set_backend("numpy")
    workspace = pyhf.Workspace(model.to_pyhf_workspace(counts, SIGNAL_POINT))
    pdf = workspace.model()
    data = workspace.data(pdf)

    generator = torch.Generator().manual_seed(7)
    for _ in range(3):
        parameters = torch.tensor(pdf.config.suggested_init(), dtype=torch.float64)
        mu = float(torch.rand(1, generator=generator)) * 2
        alpha = 4 * torch.rand(binned.n_nuisance, generator=generator, dtype=torch.float64) - 2
        parameters[pdf.config.par_slice(binned.poi_name)] = mu
        for j, name in enumerate(binned.nuisance_names):
            parameters[pdf.config.par_slice(name)] = alpha[j]
        theirs = torch.as_tensor(pdf.expected_actualdata(parameters.numpy()), dtype=torch.float64)
        assert torch.allclose(binned.expected(torch.tensor([mu]), alpha[None])[0], theirs, rtol=1e-10)

    limit = upper_limit(binned, BinnedData(counts))
    observed_limit = float(limit.observed[0])
    for mu in (0.5 * observed_limit, observed_limit, 2.0 * observed_limit):
        ours = hypotest(binned, BinnedData(counts), mu)
        cls, (p_value, clb), expected = pyhf.infer.hypotest(mu, data, pdf, test_stat="qtilde", calctype="asymptotics",
                                                          return_tail_probs=True, return_expected_set=True)
        for what, mine, theirs in (("CLs", ours.cls[0], cls), ("p_mu", ours.p_value[0], p_value),
                                   ("CL_b", ours.clb[0], clb)):
            assert float(mine) == pytest.approx(float(theirs), rel=1e-3), f"{what} at μ = {mu:.3f}"
        # pyhf lists the band from its +2σ entry (the strongest limit) down: our N = −2 … 2. Where N > √q_{μ,A}
        # (μ̂ = Nσ above μ) q̃ = 0 and sluice reports the CLs of q̃ = 0, pyhf extrapolates to t < 0: compare below
        theirs = torch.tensor([float(e) for e in expected], dtype=torch.float64)
        unclipped = torch.tensor(ours.n_sigma, dtype=torch.float64) < ours.asimov_statistic[0].sqrt()
        assert torch.allclose(ours.expected_cls[0][unclipped], theirs[unclipped], rtol=1e-3)

    def pyhf_cls(mu: float) -> float:
        return float(pyhf.infer.hypotest(mu, data, pdf, test_stat="qtilde", calctype="asymptotics")) - 0.05

    pyhf_limit = optimize.brentq(pyhf_cls, 0.5 * observed_limit, 2.0 * observed_limit, rtol=1e-6)
    assert observed_limit == pytest.approx(pyhf_limit, rel=0.01)


# --- bad input ----------------------------------------------------------------------------------------------------
def test_bad_input_is_named(generated):
    events, _, _ = generated
    n, basis = events.basis_weights.shape
    with pytest.raises(ValueError, match="luminosity must be a positive"):
        HistogramModel(events, 0.0)
    with_nuisance = WeightedEvents(events.x, events.basis_weights, MORPHING, nuisances=[Nuisance("lumi", "lognormal",
                                                                                                0.05)])
    with pytest.raises(ValueError, match=r"carry the nuisance parameters \['lumi'\]"):
        HistogramModel(with_nuisance, 1.0)
    with pytest.raises(ValueError, match=r"\['jes'\] have no constraint"):
        HistogramModel(events, 1.0, histosys={"jes": (events.basis_weights, events.basis_weights)})
    with pytest.raises(ValueError, match="histosys 'jes' \\(up\\) basis weights must have the nominal shape"):
        HistogramModel(events, 1.0, histosys={"jes": (events.basis_weights, events.basis_weights[:10])},
                       nuisances=[Nuisance("jes")])
    with pytest.raises(ValueError, match="histosys 'jes' \\(down\\) basis weights hold NaN"):
        HistogramModel(events, 1.0, histosys={"jes": (torch.full((n, basis), math.nan), events.basis_weights)},
                       nuisances=[Nuisance("jes")])
    with pytest.raises(ValueError, match="histosys 'jes' \\(down\\) have a total weight"):
        HistogramModel(events, 1.0, histosys={"jes": (-events.basis_weights, events.basis_weights)},
                       nuisances=[Nuisance("jes")])
    with pytest.raises(ValueError, match="normsys 'lumi': the factors"):
        HistogramModel(events, 1.0, normsys={"lumi": (0.0, 1.1)}, nuisances=[Nuisance("lumi")])
    with pytest.raises(ValueError, match=r"\['xs'\] have no systematic"):
        HistogramModel(events, 1.0, nuisances=[Nuisance("xs")])
    with pytest.raises(ValueError, match="'lumi' has a lognormal constraint"):
        BinnedModel(Sample("signal", [1.0], normsys={"lumi": (0.9, 1.1)}), [Sample("background", [5.0])],
                    [Nuisance("lumi", "lognormal", 0.1)])
    with pytest.raises(ValueError, match="'lumi'\\] have other widths"):
        BinnedModel(Sample("signal", [1.0], normsys={"lumi": (0.9, 1.1)}), [Sample("background", [5.0])],
                    [Nuisance("lumi", width=0.5)]).to_pyhf_workspace([4.0])
    with pytest.raises(ValueError, match="sample 'background' histosys 'jes' \\(up\\) has 1 bins"):
        Sample("background", [5.0, 6.0], histosys={"jes": ([4.0, 5.0], [6.0])})
    with pytest.raises(ValueError, match="sample 'signal': the counts hold NaN"):
        Sample("signal", [math.nan])
