"""Inference with trained estimators: likelihood-ratio scans and limits, Neyman construction, profiling,
Fisher information, posteriors and diagnostics: numbers only (figures: ``sluice.plots``). Names here are public
(docs/inference.md)."""

from .convergence import effective_sample_size, split_r_hat
from .diagnostics import (
    TARP,
    Coverage,
    PredictiveCheck,
    c2st,
    closure_test,
    coverage,
    mean_of_events,
    posterior_predictive_check,
    sbc_ranks,
    sbc_uniformity,
    standardize_by_reference,
    tarp,
    tarp_coverage,
)
from .exact import ExactLikelihood
from .extended import ExtendedTerm, extended_log_likelihood
from .fisher import (
    FisherInformation,
    exact_fisher_information,
    fisher_information,
    rate_information,
    weighted_fisher_information,
)
from .histograms import BinnedModel, Binning, HistogramModel, Sample
from .limits import (
    BinnedData,
    CountingExperiment,
    HypothesisTest,
    ToyTest,
    UpperLimit,
    asymptotic_cls,
    asymptotic_pvalue,
    expected_cls,
    hypotest,
    test_statistic,
    toy_hypotest,
    toy_statistics,
    toy_upper_limit,
    upper_limit,
)
from .neyman import neyman_thresholds, profile_scan
from .posterior import (
    Posterior,
    grid_posterior,
    log_posterior,
    mcmc_posterior,
    sample_posterior,
    variational_posterior,
)
from .scans import Scan, asimov_scan, make_grid, maximum_likelihood, scan, wilks_threshold

__all__ = [
    "Coverage", "ExactLikelihood", "FisherInformation", "Posterior", "Scan", "asimov_scan", "c2st", "closure_test",
    "coverage", "exact_fisher_information", "fisher_information", "grid_posterior", "log_posterior", "make_grid",
    "maximum_likelihood", "mcmc_posterior", "neyman_thresholds", "profile_scan", "sbc_ranks", "sbc_uniformity", "scan",
    "variational_posterior", "wilks_threshold", "TARP", "tarp", "tarp_coverage", "PredictiveCheck",
    "posterior_predictive_check", "mean_of_events", "standardize_by_reference", "sample_posterior",
    "effective_sample_size", "split_r_hat", "weighted_fisher_information", "rate_information",
    "ExtendedTerm", "extended_log_likelihood", "BinnedData", "CountingExperiment", "HypothesisTest", "UpperLimit",
    "ToyTest", "hypotest", "upper_limit", "test_statistic", "asymptotic_pvalue", "asymptotic_cls", "expected_cls",
    "toy_statistics", "toy_hypotest", "toy_upper_limit", "Binning", "HistogramModel", "BinnedModel", "Sample",
]
