"""Convergence diagnostics of MCMC chains [W, m, p] (Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021,
"Rank-normalization, folding, and localization: an improved R-hat"): the rank-normalised bulk effective sample size
and split R-hat per parameter, in numpy, equal to ArviZ's, so that the sampler needs no optional dependency."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["effective_sample_size", "split_r_hat"]



def _rank_normalised_split(chains: np.ndarray) -> np.ndarray:
    """[W, T, p] → [2W, T//2, p]: each chain cut in halves (the middle draw of an odd chain dropped), and every
    draw replaced by Φ⁻¹((r − 3/8)/(S + 1/4)), r its average rank among all S draws of its parameter."""
    from scipy import special, stats

    half = chains.shape[1] // 2
    split = np.concatenate([chains[:, :half], chains[:, chains.shape[1] - half:]], axis=0)
    ranks = stats.rankdata(split.reshape(-1, split.shape[2]), axis=0)
    return special.ndtri((ranks - 0.375) / (ranks.shape[0] + 0.25)).reshape(split.shape)


def effective_sample_size(chains) -> np.ndarray:
    """Bulk effective sample size [p] of MCMC draws ``chains`` [W chains, T draws, p] (or [W, T]): the ESS of the
    rank-normalised split chains, S/τ̂ with τ̂ = −1 + 2 Σ_t ρ̂_t summed over Geyer's initial monotone sequence of
    paired autocorrelations ρ̂ (combined over chains through the within/between variances); what ArviZ reports
    as ``ess(method="bulk")``."""
    chains = np.asarray(chains, dtype=np.float64)
    chains = chains[..., None] if chains.ndim == 2 else chains
    split = _rank_normalised_split(chains)
    return np.array([_ess_of_one_parameter(split[:, :, j]) for j in range(split.shape[2])])


def _ess_of_one_parameter(draws: np.ndarray) -> float:
    """ESS of draws [M chains, n] from their autocovariances, per Vehtari et al. (2021), eqs. 10–11."""
    m, n = draws.shape
    if n < 4:
        return float("nan")
    centred = draws - draws.mean(axis=1, keepdims=True)
    size = 2 ** math.ceil(math.log2(2 * n))  # zero-padded FFT: the linear, not the circular, autocovariance
    spectrum = np.fft.rfft(centred, n=size, axis=1)
    autocovariance = np.fft.irfft(spectrum * np.conjugate(spectrum), n=size, axis=1)[:, :n] / n
    within = autocovariance[:, 0].mean() * n / (n - 1)
    variance = within * (n - 1) / n + (draws.mean(axis=1).var(ddof=1) if m > 1 else 0.0)
    if variance <= 0:
        return float("nan")
    rho = 1.0 - (within - autocovariance.mean(axis=0)) / variance
    rho[0] = 1.0
    # Geyer's initial positive sequence: the pairs P_k = ρ_2k + ρ_2k+1 (those within lag n − 2) up to the first
    # P_k ≤ 0, made monotone (which bounds the estimate's variance), plus that pair's ρ_2k where positive
    count = (n - 1) // 2
    pairs = rho[: 2 * count].reshape(-1, 2).sum(axis=1)
    failing = np.nonzero(pairs[1:] <= 0)[0]
    stop = int(failing[0]) + 1 if failing.size else count - 1
    tau = -1.0 + 2.0 * np.minimum.accumulate(pairs[:stop]).sum() + max(float(rho[2 * stop]), 0.0)
    tau = max(tau, 1.0 / math.log10(m * n))  # the lower bound that keeps antithetic chains' ESS finite
    return float(m * n / tau)


def split_r_hat(chains) -> np.ndarray:
    """Rank-normalised split R-hat [p] of ``chains`` [W, T, p] (or [W, T]): the larger of the R-hat of the
    rank-normalised split draws and of their folded |θ − median| (which sees chains that differ in spread only),
    R̂ = √(((n−1)/n · W + B/n) / W), W the mean within-chain variance and B/n the variance of chain means; what
    ArviZ reports as ``rhat(method="rank")``. 1.01 and above: not mixed."""
    chains = np.asarray(chains, dtype=np.float64)
    chains = chains[..., None] if chains.ndim == 2 else chains
    folded = np.abs(chains - np.median(chains.reshape(-1, chains.shape[2]), axis=0))
    return np.maximum(_r_hat(_rank_normalised_split(chains)), _r_hat(_rank_normalised_split(folded)))


def _r_hat(split: np.ndarray) -> np.ndarray:
    n = split.shape[1]
    within = split.var(axis=1, ddof=1).mean(axis=0)
    between_over_n = split.mean(axis=1).var(axis=0, ddof=1)
    return np.sqrt(((n - 1) / n * within + between_over_n) / within)
