"""Systematic uncertainties: HistFactory's interpolation codes and the constraint terms of nuisance parameters.

A systematic effect is known at three values of its nuisance parameter α: the nominal prediction at α = 0 and
the "down" and "up" variations at α = −1 and α = +1 (±1σ). ``interpolate`` continues the prediction to every α
with the conventions of HistFactory, as pyhf defines them (I⁰ = nominal, I± = up/down, δ± = I± − I⁰):

    code0   (additive, piecewise linear)          I⁰ + α δ⁺                     α ≥ 0
                                                  I⁰ + α δ⁻,  δ⁻ = I⁰ − I⁻      α < 0
    code1   (multiplicative, piecewise exp.)      I⁰ (I⁺/I⁰)^α                  α ≥ 0
                                                  I⁰ (I⁻/I⁰)^(−α)               α < 0
    code4   (multiplicative: pyhf's normsys)      code1 for |α| ≥ 1; inside, I⁰ (1 + Σ_{i=1}^6 a_i α^i) with the
                                                  a_i fixed by value, slope and curvature of code1 at α = ±1
    code4p  (additive: pyhf's histosys)           code0 for |α| > 1; inside, I⁰ + α S + α² (15 + α² (3α² − 10)) A
                                                  with S = (δ⁺ + δ⁻)/2, A = (δ⁺ − δ⁻)/16

code0 and code1 have a kink at α = 0 when the variations are asymmetric (the score there is one-sided); code4
and code4p are smooth (code4 twice continuously differentiable everywhere), which is why pyhf defaults to them.

A ``Nuisance`` names a parameter and its constraint term, the likelihood of its auxiliary measurement a (a
global observable; HistFactory's convention: a = 0 at nominal, where the term is maximal at α = 0):

    gaussian   (width s)   log c(α; a) = −½ ((α − a)/s)² − log(s √(2π))                     α any real
    lognormal  (width s)   log c(α; a) = −½ ((log(1 + α) − log(1 + a))/s)² − log(s √(2π))   α, a > −1

A toy experiment at α draws its own auxiliary measurement from the same term read as a distribution of a:
a ~ N(α, s²), or log(1 + a) ~ N(log(1 + α), s²) (``Nuisance.sample_auxiliary``).

The log-normal one constrains a normalisation η = 1 + α (α = 0 nominal, α = 0.02 a 2 % higher rate) with a
relative uncertainty s, so that η stays positive; both carry the information 1/s² at α = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["CODES", "CONSTRAINTS", "Interpolator", "Nuisance", "interpolate"]

CODES = ("code0", "code1", "code4", "code4p")
MULTIPLICATIVE_CODES = ("code1", "code4")
CONSTRAINTS = ("gaussian", "lognormal")


def _code4_inverse() -> torch.Tensor:
    """The inverse of the 6 × 6 system that fixes p(α) = 1 + Σ_{i=1}^6 a_i α^i by p, p', p'' at α = +1 and −1
    (rows: p(1) − 1, p(−1) − 1, p'(1), p'(−1), p''(1), p''(−1); columns: a_1 … a_6)."""
    powers = torch.arange(1, 7, dtype=torch.float64)
    ends = (1.0, -1.0)
    values = [end**powers for end in ends]
    slopes = [powers * end ** (powers - 1) for end in ends]
    curvatures = [powers * (powers - 1) * end ** (powers - 2) for end in ends]
    return torch.linalg.inv(torch.stack(values + slopes + curvatures))


CODE4_INVERSE = _code4_inverse()  # [6 coefficients, 6 conditions]


def _check_code(code) -> None:
    if code not in CODES:
        raise ValueError(f"interpolate: unknown interpolation code {code!r}; use one of {', '.join(CODES)}")


def interpolate(alpha, nominal, down, up, code: str) -> torch.Tensor:
    """The prediction at nuisance value ``alpha`` from its ``nominal`` value and its ``down``/``up`` variations
    at α = −1/+1, with HistFactory's interpolation ``code`` ("code0", "code1", "code4", "code4p"; module
    docstring). All four arguments broadcast against each other (e.g. alpha [G, 1] against bins [n]); the
    result has their broadcast shape and the widest floating dtype among the tensors given (float64 for plain
    numbers and arrays), and is differentiable in ``alpha`` (and in the templates).

    The multiplicative codes (code1, code4) need down/nominal and up/nominal > 0; where the nominal is 0 the
    result is 0 (nothing to scale). Unknown codes raise ValueError. For many α against the same templates,
    ``Interpolator`` does the per-template work once.

    >>> interpolate(torch.tensor([-1.0, 0.0, 0.5, 1.0]), 10.0, 8.0, 13.0, "code0")
    tensor([ 8.0000, 10.0000, 11.5000, 13.0000])
    >>> round(float(interpolate(2.0, 10.0, 8.0, 13.0, "code1")), 6)  # 10 · 1.3²
    16.9
    """
    _check_code(code)
    dtype = _widest_float((alpha, nominal, down, up))
    return Interpolator(nominal, down, up, code, dtype)(torch.as_tensor(alpha, dtype=dtype))


def _widest_float(values) -> torch.dtype:
    """The widest floating dtype among the tensors in ``values``; plain numbers and integer arrays alone: float64."""
    floating = [value.dtype for value in values if torch.is_tensor(value) and value.is_floating_point()]
    dtype = floating[0] if floating else torch.float64
    for other in floating[1:]:
        dtype = torch.promote_types(dtype, other)
    return dtype


class Interpolator:
    """``interpolate`` with the per-template work (ratios, logarithms, code4's polynomial coefficients) done once:
    ``Interpolator(nominal, down, up, code)(alpha)`` equals ``interpolate(alpha, nominal, down, up, code)``, and
    ``factor(alpha)`` gives the multiplicative codes' factor f(α) (f(0) = 1, f(±1) = down/nominal, up/nominal;
    1 where the nominal is 0). Templates broadcast against each other and then against α at each call.

    >>> Interpolator(10.0, 8.0, 13.0, "code4").factor(torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64))
    tensor([0.8000, 1.0000, 1.3000], dtype=torch.float64)
    """

    def __init__(self, nominal, down, up, code: str, dtype: torch.dtype | None = None):
        _check_code(code)
        dtype = dtype or _widest_float((nominal, down, up))
        nominal, down, up = torch.broadcast_tensors(*(torch.as_tensor(value, dtype=dtype)
                                                      for value in (nominal, down, up)))
        self.code, self.nominal = code, nominal
        if code not in MULTIPLICATIVE_CODES:
            self.delta_up, self.delta_down = up - nominal, nominal - down
            self.mean_slope = 0.5 * (self.delta_up + self.delta_down)  # code4p's S
            self.asymmetry = (self.delta_up - self.delta_down) / 16.0  # code4p's A
            return
        empty = nominal == 0
        safe_nominal = torch.where(empty, torch.ones_like(nominal), nominal)
        ratio_up = torch.where(empty, torch.ones_like(up), up / safe_nominal)
        ratio_down = torch.where(empty, torch.ones_like(down), down / safe_nominal)
        bad = ~(ratio_up > 0) | ~(ratio_down > 0)  # catches NaN too
        if bad.any():
            raise ValueError(f"interpolate: {code} is multiplicative and needs up/nominal and down/nominal > 0, but "
                             f"{int(bad.sum())} entries are ≤ 0 or NaN; use an additive code (code0, code4p) for "
                             f"such variations")
        self.log_up, self.log_down = torch.log(ratio_up), torch.log(ratio_down)
        if code == "code4":
            conditions = torch.stack([ratio_up - 1, ratio_down - 1, ratio_up * self.log_up,
                                      -ratio_down * self.log_down, ratio_up * self.log_up**2,
                                      ratio_down * self.log_down**2], dim=-1)
            self.coefficients = conditions @ CODE4_INVERSE.to(dtype).T  # a_1 … a_6, [..., 6]

    def factor(self, alpha) -> torch.Tensor:
        """f(α) of code1/code4, broadcast against the templates."""
        if self.code not in MULTIPLICATIVE_CODES:
            raise ValueError(f"Interpolator: {self.code} is additive; it has no multiplicative factor")
        alpha = torch.as_tensor(alpha, dtype=self.log_up.dtype)
        # one exponential, (I±/I⁰)^|α|, finite for every α, so torch.where leaves no NaN in the gradient
        exponential = torch.exp(alpha * torch.where(alpha >= 0, self.log_up, -self.log_down))
        if self.code == "code1":
            return exponential
        inside = alpha.clamp(-1.0, 1.0)  # the polynomial is used only for |α| < 1; clamping keeps it tame elsewhere
        polynomial = self.coefficients[..., 5]
        for k in range(4, -1, -1):  # Horner: ((a_6 α + a_5) α + … + a_1) α + 1
            polynomial = polynomial * inside + self.coefficients[..., k]
        return torch.where(alpha.abs() < 1, 1.0 + polynomial * inside, exponential)

    def factor_slope(self, alpha) -> torch.Tensor:
        """df/dα of code1/code4 in closed form, broadcast against the templates (code1: the one-sided slope
        of the branch α falls in, log(I⁺/I⁰) at α = 0)."""
        if self.code not in MULTIPLICATIVE_CODES:
            raise ValueError(f"Interpolator: {self.code} is additive; it has no multiplicative factor")
        alpha = torch.as_tensor(alpha, dtype=self.log_up.dtype)
        log_ratio = torch.where(alpha >= 0, self.log_up, -self.log_down)
        exponential = log_ratio * torch.exp(alpha * log_ratio)
        if self.code == "code1":
            return exponential
        inside = alpha.clamp(-1.0, 1.0)
        slope = 6.0 * self.coefficients[..., 5]
        for k in range(4, -1, -1):  # Horner on p'(α) = Σ_i i a_i α^(i−1)
            slope = slope * inside + (k + 1) * self.coefficients[..., k]
        return torch.where(alpha.abs() < 1, slope, exponential)

    def factor_curvature(self, alpha) -> torch.Tensor:
        """d²f/dα² of code1/code4 in closed form, broadcast against the templates (code1: that of the branch α
        falls in)."""
        if self.code not in MULTIPLICATIVE_CODES:
            raise ValueError(f"Interpolator: {self.code} is additive; it has no multiplicative factor")
        alpha = torch.as_tensor(alpha, dtype=self.log_up.dtype)
        log_ratio = torch.where(alpha >= 0, self.log_up, -self.log_down)
        exponential = log_ratio**2 * torch.exp(alpha * log_ratio)
        if self.code == "code1":
            return exponential
        inside = alpha.clamp(-1.0, 1.0)
        curvature = 30.0 * self.coefficients[..., 5]
        for k in range(4, 0, -1):  # Horner on p''(α) = Σ_i i (i − 1) a_i α^(i−2)
            curvature = curvature * inside + (k + 1) * k * self.coefficients[..., k]
        return torch.where(alpha.abs() < 1, curvature, exponential)

    def factor_bound(self, alpha_min: float, alpha_max: float) -> torch.Tensor:
        """An upper bound of f(α) over α ∈ [alpha_min, alpha_max] for each template (code1/code4): f is
        monotone outside |α| < 1, so its ends and ±1 bound it there; inside, code4's polynomial is at most
        1 + Σ_i |a_i|."""
        if self.code not in MULTIPLICATIVE_CODES:
            raise ValueError(f"Interpolator: {self.code} is additive; it has no multiplicative factor")
        upper = max(float(alpha_max), 1.0 if self.code == "code4" else 0.0)
        lower = max(-float(alpha_min), 1.0 if self.code == "code4" else 0.0)
        bound = torch.maximum(torch.exp(upper * self.log_up).maximum(self.log_up.exp()),
                              torch.exp(lower * self.log_down).maximum(self.log_down.exp()))
        if self.code == "code4":
            bound = torch.maximum(bound, 1.0 + self.coefficients.abs().sum(dim=-1))
        return torch.maximum(bound, torch.ones_like(bound))

    def __getitem__(self, index) -> Interpolator:
        """The interpolator of the templates ``index`` selects along their first dimension (no recomputation)."""
        selected = object.__new__(Interpolator)
        for name, value in vars(self).items():
            setattr(selected, name, value[index] if torch.is_tensor(value) else value)
        return selected

    def __call__(self, alpha) -> torch.Tensor:
        """The prediction at ``alpha``: nominal · f(α) (multiplicative codes) or nominal + Δ(α) (additive)."""
        if self.code in MULTIPLICATIVE_CODES:
            return self.nominal * self.factor(alpha)
        alpha = torch.as_tensor(alpha, dtype=self.nominal.dtype)
        linear = torch.where(alpha >= 0, alpha * self.delta_up, alpha * self.delta_down)
        if self.code == "code0":
            return self.nominal + linear
        square = alpha * alpha
        polynomial = alpha * self.mean_slope + square * (15.0 + square * (3.0 * square - 10.0)) * self.asymmetry
        return self.nominal + torch.where(alpha.abs() > 1, linear, polynomial)


@dataclass(frozen=True)
class Nuisance:
    """A nuisance parameter ``name`` with its constraint term: ``constraint`` "gaussian" (α ~ N(0, width²); α in
    units of the ±1σ variations when width = 1) or "lognormal" (a normalisation η = 1 + α with relative
    uncertainty ``width``, η > 0). Nominal value α = 0 for both (module docstring has the formulas).

    >>> Nuisance("jes").log_constraint(torch.tensor(1.0)) + 0.5 * math.log(2 * math.pi)
    tensor(-0.5000)
    >>> Nuisance("luminosity", "lognormal", width=0.02).information()
    2500.0
    """

    name: str
    constraint: str = "gaussian"
    width: float = 1.0

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Nuisance: name must be a non-empty string, got {self.name!r}")
        if self.constraint is None:
            raise ValueError(f"Nuisance '{self.name}' has no constraint; an unconstrained nuisance is a free "
                             f"parameter: give constraint={' or '.join(map(repr, CONSTRAINTS))}")
        if self.constraint not in CONSTRAINTS:
            raise ValueError(f"Nuisance '{self.name}': unknown constraint {self.constraint!r}; use one of "
                             f"{', '.join(CONSTRAINTS)}")
        width = float(self.width)
        if not (math.isfinite(width) and width > 0):
            raise ValueError(f"Nuisance '{self.name}': width must be a positive finite number, got {self.width!r}")
        object.__setattr__(self, "width", width)

    def log_constraint(self, alpha, auxiliary=0.0) -> torch.Tensor:
        """log c(α; a), elementwise over ``alpha`` and the auxiliary measurement ``auxiliary`` (broadcast; a = 0
        nominal; float64 unless alpha is a float32 tensor); −inf where a log-normal α ≤ −1 (η ≤ 0).
        Differentiable in α."""
        alpha = torch.as_tensor(alpha, dtype=alpha.dtype if torch.is_tensor(alpha) and alpha.is_floating_point()
                                else torch.float64)
        auxiliary = self.checked_auxiliary(auxiliary, alpha.dtype)
        normalisation = math.log(self.width * math.sqrt(2 * math.pi))
        if self.constraint == "gaussian":
            return -0.5 * ((alpha - auxiliary) / self.width) ** 2 - normalisation
        positive = alpha > -1
        log_eta = torch.log1p(torch.where(positive, alpha, torch.zeros_like(alpha)))  # finite in both branches
        return torch.where(positive, -0.5 * ((log_eta - torch.log1p(auxiliary)) / self.width) ** 2 - normalisation,
                           torch.full_like(alpha, -math.inf))

    def checked_auxiliary(self, auxiliary, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``auxiliary`` as a tensor, after checking that it is a possible auxiliary measurement (finite; a
        log-normal one > −1)."""
        auxiliary = torch.as_tensor(auxiliary, dtype=dtype)
        if not torch.isfinite(auxiliary).all():
            raise ValueError(f"Nuisance '{self.name}': the auxiliary measurement must be finite, got "
                             f"{auxiliary.tolist() if auxiliary.numel() <= 8 else 'non-finite values'}")
        if self.constraint == "lognormal" and (auxiliary <= -1).any():
            raise ValueError(f"Nuisance '{self.name}': a log-normal auxiliary measurement a is a normalisation "
                             f"1 + a > 0; got a ≤ −1")
        return auxiliary

    def sample_auxiliary(self, alpha, generator: torch.Generator | None = None) -> torch.Tensor:
        """One auxiliary measurement per element of ``alpha`` (float64, alpha's shape), as a toy experiment at α
        records it: a ~ N(α, s²) (gaussian), 1 + a = (1 + α) exp(s N(0, 1)) (lognormal). At α = 0 these are the
        draws of ``sample``."""
        alpha = torch.as_tensor(alpha, dtype=torch.float64)
        normal = torch.randn(alpha.shape, generator=generator, dtype=torch.float64)
        if self.constraint == "gaussian":
            return alpha + self.width * normal
        if (alpha <= -1).any():
            raise ValueError(f"Nuisance '{self.name}': a log-normal α must be > −1 (1 + α is a normalisation)")
        return (1.0 + alpha) * torch.exp(self.width * normal) - 1.0

    def information(self, alpha: float = 0.0) -> float:
        """The Fisher information of the constraint term, −d² log c/dα² averaged over its auxiliary measurement:
        1/width² (gaussian), 1/(width² (1 + α)²) (lognormal)."""
        if self.constraint == "gaussian":
            return 1.0 / self.width**2
        return 1.0 / (self.width * (1.0 + float(alpha))) ** 2

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws [n] (float64) of α from the constraint read as a distribution: width · N(0, 1) (gaussian),
        exp(width · N(0, 1)) − 1 (lognormal: η log-normal with median 1)."""
        normal = torch.randn(int(n), generator=generator, dtype=torch.float64)
        if self.constraint == "gaussian":
            return self.width * normal
        return torch.expm1(self.width * normal)


def checked_nuisances(nuisances, user: str) -> tuple:
    """``nuisances`` as a tuple, after checking that each is a ``Nuisance`` and no name comes twice (``user``
    names the caller in the errors)."""
    nuisances = tuple(nuisances)
    for nuisance in nuisances:
        if not isinstance(nuisance, Nuisance):
            raise TypeError(f"{user}: nuisances must be sluice Nuisance objects, got {nuisance!r}")
    names = [nuisance.name for nuisance in nuisances]
    if len(set(names)) != len(names):
        raise ValueError(f"{user}: a nuisance parameter is named twice: {names}")
    return nuisances
