"""Morphing: the weight of an event at any θ from its weights at a few basis points, when dσ is polynomial in θ.

A differential cross section that is a polynomial in θ (an effective field theory at the order where the
squared amplitude is quadratic in the Wilson coefficients),

    dσ(z|θ) = Σ_m c_m(θ) f_m(z),        c_m(θ) = ∏_j θ_j^(k_mj)   (the monomials, m = 1 … M),

is fixed by its values at M basis points θ_b. With the monomial matrix A_bm = c_m(θ_b),
dσ(z|θ_b) = Σ_m A_bm f_m(z), so f(z) = A⁻¹ dσ(z|θ_basis) and

    dσ(z|θ) = Σ_b a_b(θ) dσ(z|θ_b),     a(θ) = A⁻ᵀ c(θ)          (the morphing weights, [B]).

The same holds for anything linear in dσ: event weights, histogram bins, σ(θ) itself.
"""

from __future__ import annotations

import itertools

import torch

__all__ = ["Morphing", "monomial_powers", "monomials"]

DEFAULT_MAX_CONDITION = 1e5  # a sensible basis in a unit box gives 10 … 100; 1e5 amplifies weight errors 1e5-fold


def monomial_powers(n_parameters: int, degree: int) -> tuple[tuple[int, ...], ...]:
    """The exponents of every monomial of total degree ≤ ``degree`` in ``n_parameters`` variables, by degree
    and then with the first parameter's power highest: for (c1, c2) and degree 2, 1, c1, c2, c1², c1·c2, c2²."""
    if n_parameters < 1 or degree < 0:
        raise ValueError(f"monomial_powers: need n_parameters ≥ 1 and degree ≥ 0, got {n_parameters}, {degree}")
    powers = []
    for total in range(degree + 1):
        level = [k for k in itertools.product(range(total + 1), repeat=n_parameters) if sum(k) == total]
        powers += sorted(level, reverse=True)
    return tuple(powers)


def monomials(theta: torch.Tensor, powers) -> torch.Tensor:
    """c_m(θ) = ∏_j θ_j^(k_mj) for every row of ``theta`` [n, p]: shape [n, M], differentiable in θ."""
    columns = []
    for exponent in powers:
        column = torch.ones_like(theta[:, 0])
        for j, k in enumerate(exponent):
            for _ in range(int(k)):  # repeated products: θ**0 would give a NaN gradient at θ = 0
                column = column * theta[:, j]
        columns.append(column)
    return torch.stack(columns, dim=1)


def _monomial_name(exponent, names) -> str:
    factors = [name + ("" if k == 1 else f"^{k}") for name, k in zip(names, exponent, strict=True) if k]
    return "·".join(factors) or "1"


class Morphing:
    """Morphing weights a(θ) over ``basis_points`` [B, p] for a polynomial of total degree ≤ ``degree``
    (or the monomials with the exponents ``powers``, e.g. ``[(0, 0), (1, 0), (2, 0)]``).

    The number of basis points must equal the number of monomials M, and the basis must fix every
    monomial: the monomial matrix, with each θ_j measured in units of its largest value over the basis (so
    the check does not depend on the units of θ), must have a condition number below ``max_condition``;
    otherwise a ValueError names the monomial the basis leaves (nearly) undetermined. A large condition
    number means large morphing weights of both signs, which amplify statistical noise in the weights.

    Example::

        morphing = Morphing([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1], [1, 1]], degree=2,
                            parameter_names=("c1", "c2"))
        a = morphing.weights(torch.tensor([0.3, -0.2]))          # [1, 6]
        weight_at_theta = (a * basis_weights).sum(dim=1)           # basis_weights [n, 6]
    """

    def __init__(self, basis_points, degree: int = 2, powers=None, parameter_names=None,
                 max_condition: float = DEFAULT_MAX_CONDITION):
        basis = torch.as_tensor(basis_points, dtype=torch.float64)
        if basis.ndim != 2:
            raise ValueError(f"Morphing: basis_points must have shape [B, p], got {list(basis.shape)}")
        if not torch.isfinite(basis).all():
            raise ValueError("Morphing: basis_points hold NaN or inf")
        p = basis.shape[1]
        self.powers = tuple(tuple(int(k) for k in power) for power in powers) if powers is not None \
            else monomial_powers(p, degree)
        if any(len(power) != p for power in self.powers):
            raise ValueError(f"Morphing: every entry of powers needs {p} exponents, one per parameter")
        if len(set(self.powers)) != len(self.powers):
            raise ValueError("Morphing: powers lists a monomial twice")
        self.parameter_names = tuple(parameter_names) if parameter_names is not None else \
            tuple(f"theta_{j}" for j in range(p))
        if len(self.parameter_names) != p:
            raise ValueError(f"Morphing: {len(self.parameter_names)} parameter_names for {p} parameters")
        names = self.monomial_names
        if basis.shape[0] != len(self.powers):
            raise ValueError(f"Morphing: the polynomial has {len(self.powers)} monomials ({', '.join(names)}), so "
                             f"it needs exactly {len(self.powers)} basis points; got {basis.shape[0]}")
        matrix = monomials(basis, self.powers)
        vanishing = torch.nonzero((matrix == 0).all(dim=0)).flatten()
        if vanishing.numel():
            raise ValueError(f"Morphing: the monomial {names[int(vanishing[0])]} vanishes at every basis point, so "
                             f"the basis cannot determine it; move some basis points off zero in those parameters")
        # measure θ_j in units of its largest basis value, so the check does not depend on the units of θ
        unit = basis.abs().max(dim=0).values.clamp_min(torch.finfo(torch.float64).tiny)
        scale = monomials(unit[None], self.powers)[0]  # A = scaled · diag(scale)
        scaled = monomials(basis / unit, self.powers)
        _, singular, right = torch.linalg.svd(scaled)
        self.condition_number = float(singular[0] / singular[-1]) if singular[-1] > 0 else float("inf")
        if not self.condition_number <= max_condition:
            worst = names[int(right[-1].abs().argmax())]
            raise ValueError(f"Morphing: the basis points nearly fail to determine the polynomial: the monomial "
                             f"matrix has condition number {self.condition_number:.3g} > max_condition = "
                             f"{max_condition:.3g}, worst along the monomial {worst}. Repeated basis points, or "
                             f"points on a line or a conic, leave monomials undetermined; spread them out")
        self.basis_points = basis
        self.matrix = matrix  # A_bm = c_m(θ_b), [B, M]
        self._inverse = torch.linalg.inv(scaled) / scale[:, None]  # A⁻¹, computed from the scaled matrix

    @property
    def n_parameters(self) -> int:
        return self.basis_points.shape[1]

    @property
    def n_basis(self) -> int:
        return self.basis_points.shape[0]

    @property
    def monomial_names(self) -> list[str]:
        return [_monomial_name(power, self.parameter_names) for power in self.powers]

    def theta_batch(self, theta) -> torch.Tensor:
        """``theta`` as float64 [n, p] (a [p] vector becomes one row); keeps an autograd graph."""
        if not (torch.is_tensor(theta) and theta.dtype == torch.float64):
            theta = torch.as_tensor(theta, dtype=torch.float64)
        if theta.ndim == 1:
            theta = theta[None]
        if theta.ndim != 2 or theta.shape[1] != self.n_parameters:
            raise ValueError(f"Morphing: theta must have shape [n, {self.n_parameters}] or "
                             f"[{self.n_parameters}], got {list(theta.shape)}")
        return theta

    def monomials(self, theta) -> torch.Tensor:
        """c(θ) [n, M] in float64 (``theta`` [n, p] or [p]), differentiable in θ."""
        return monomials(self.theta_batch(theta), self.powers)

    def weights(self, theta) -> torch.Tensor:
        """The morphing weights a(θ) = A⁻ᵀ c(θ): [n, B] in float64, differentiable in θ, with
        Σ_b a_b(θ) dσ(z|θ_b) = dσ(z|θ) and a(θ_b) = the b-th unit vector."""
        return self.monomials(theta) @ self._inverse

    def components(self, basis_weights) -> torch.Tensor:
        """The coefficient functions f_m(z_i) = Σ_b (A⁻¹)_mb w_i(θ_b) of each event: [n, M] in float64,
        so that w_i(θ) = Σ_m c_m(θ) f_m(z_i)."""
        return self._basis_weights(basis_weights) @ self._inverse.T

    def morph(self, basis_weights, theta) -> torch.Tensor:
        """w_i(θ) = Σ_b a_b(θ) w_i(θ_b) for ``basis_weights`` [n, B] at ``theta`` [p] (every event) or
        [n, p] (one θ per event): [n] in float64."""
        weights = self._basis_weights(basis_weights)
        return (self.weights(theta) * weights).sum(dim=1)

    def _basis_weights(self, basis_weights) -> torch.Tensor:
        weights = torch.as_tensor(basis_weights, dtype=torch.float64)
        if weights.ndim != 2 or weights.shape[1] != self.n_basis:
            raise ValueError(f"Morphing: basis_weights must have shape [n_events, {self.n_basis}] (one column per "
                             f"basis point), got {list(weights.shape)}")
        return weights

    def __repr__(self) -> str:
        return (f"Morphing(basis={self.basis_points.tolist()}, monomials={self.monomial_names}, "
                f"condition={self.condition_number:.3g})")
