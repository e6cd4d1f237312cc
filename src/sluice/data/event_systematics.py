"""The nuisance parameters of ``WeightedEvents`` (docs/systematics.md): per-event weight variations turned into
factors F_ib(α) with HistFactory's code4, log-normal normalisations, and σ(θ, α)'s normalisation over the whole
sample, computed in chunks and cached per distinct α (the formulas are in ``weighted_events``' module notes)."""

from __future__ import annotations

import torch

from ..simulators.morphing import Morphing
from ..simulators.systematics import Interpolator, Nuisance

PER_EVENT_CODE = "code4"  # smooth at α = 0 (so t_α is defined there), positive, exact at α = ±1; code1 has a kink
MAX_CHUNK_ELEMENTS = 2_000_000  # events × nuisance points evaluated at once when normalising σ(θ, α)
MAX_CACHED_NUISANCE_POINTS = 200_000


def _as_float64(name: str, value) -> torch.Tensor:
    tensor = torch.as_tensor(value.detach() if torch.is_tensor(value) else value, dtype=torch.float64)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"WeightedEvents: {name} holds NaN or inf ({int((~torch.isfinite(tensor)).sum())} entries)")
    return tensor


class _Systematics:
    """The nuisance model of a weighted sample: per-event factors F_ib(α) from the weight variations, the
    lognormal normalisations, and (shared with every slice) the whole sample's normalisation of σ(θ, α)."""

    def __init__(self, nuisances: tuple, factors: dict, normalisation: _Normalisation):
        self.nuisances = nuisances
        self.factors = factors  # nuisance index → Interpolator of ratios, [n, 1] or [n, B]
        self.lognormal = [k for k, nuisance in enumerate(nuisances) if nuisance.constraint == "lognormal"]
        self.normalisation = normalisation

    @classmethod
    def build(cls, nuisances, variations, variations_at, basis_weights: torch.Tensor,
              morphing: Morphing) -> _Systematics:
        nuisances = tuple(nuisances or ())
        variations = dict(variations or {})
        names = []
        for nuisance in nuisances:
            if not isinstance(nuisance, Nuisance):
                raise ValueError(f"WeightedEvents: nuisance {nuisance!r} has no constraint; give "
                                 f"sluice.simulators.systematics.Nuisance(name, 'gaussian' or 'lognormal', width)")
            names.append(nuisance.name)
        for name in variations:
            if name not in names:
                raise ValueError(f"WeightedEvents: variation '{name}' has no constraint: add Nuisance('{name}', "
                                 f"'gaussian') to nuisances")
        clash = sorted(set(names) & set(morphing.parameter_names)) or sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ValueError(f"WeightedEvents: nuisance names must be unique and differ from θ's "
                             f"{list(morphing.parameter_names)}; '{clash[0]}' is taken")
        reference = basis_weights[:, 0] if variations_at is None else \
            morphing.morph(basis_weights, morphing.theta_batch(variations_at).reshape(-1))
        factors = {}
        for k, nuisance in enumerate(nuisances):
            given = variations.get(nuisance.name)
            if nuisance.constraint == "lognormal":
                if given is not None:
                    raise ValueError(f"WeightedEvents: nuisance '{nuisance.name}' is lognormal: it scales every "
                                     f"weight by 1 + α and takes no weight variations; give variations to a "
                                     f"'gaussian' nuisance")
                continue
            if given is None:
                raise ValueError(f"WeightedEvents: gaussian nuisance '{nuisance.name}' has no weight variations; "
                                 f"give variations={{'{nuisance.name}': (down_weights, up_weights)}}")
            factors[k] = _ratio_interpolator(nuisance.name, given, basis_weights, reference)
        return cls(nuisances, factors, _Normalisation(basis_weights, factors))

    def select(self, rows: torch.Tensor) -> _Systematics:
        return _Systematics(self.nuisances, {k: factor[rows] for k, factor in self.factors.items()},
                            self.normalisation)

    def event_factors(self, alpha: torch.Tensor) -> torch.Tensor | None:
        """F_ib(α) = Π_k f_k(α_k) for α [..., K] broadcasting against the events [n] ([1 or n, K]: one α per
        event; [k, 1, K]: a table): [..., n, 1 or B] (None without variations)."""
        product = None
        for k, factor in self.factors.items():
            value = factor.factor(alpha[..., k, None])
            product = value if product is None else product * value
        return product

    def lognormal_factor(self, alpha: torch.Tensor) -> torch.Tensor | None:
        """Π_lognormal (1 + α_k) for α [..., K]: [...] (None without lognormal nuisances)."""
        product = None
        for k in self.lognormal:
            product = 1.0 + alpha[..., k] if product is None else product * (1.0 + alpha[..., k])
        return product

    def varied_weights(self, nominal, morphing_weights, basis_weights, alpha) -> torch.Tensor:
        """w_i(θ, α) = w_i(θ) + Σ_b a_b(θ) w_ib (F_ib(α) − 1), times the lognormal factors: exactly w_i(θ) at α = 0.
        ``nominal`` [..., n], ``morphing_weights`` [..., B], ``basis_weights`` [n, B], ``alpha`` [..., K]."""
        weights = nominal
        factors = self.event_factors(alpha)
        if factors is not None:
            if factors.shape[-1] == 1:  # the same factor at every basis point: w_i(θ) (F_i − 1)
                weights = weights + nominal * (factors[..., 0] - 1.0)
            else:
                weights = weights + (morphing_weights * basis_weights * (factors - 1.0)).sum(dim=-1)
        scale = self.lognormal_factor(alpha)
        return weights if scale is None else weights * scale

    def varied_cross_section(self, nominal, morphing_weights, basis_cross_sections, alpha) -> torch.Tensor:
        """σ(θ, α) = σ(θ) + Σ_b a_b(θ) σ(θ_b) D_b(α), D_b(α) = Σ_i w_ib (F_ib(α) − 1) / Σ_i w_ib over the whole
        sample, times the lognormal factors [G]."""
        sigma = nominal
        if self.factors:
            shift = self.normalisation.shift_rows(alpha[:, sorted(self.factors)])
            sigma = sigma + (morphing_weights * basis_cross_sections * shift).sum(dim=1)
        scale = self.lognormal_factor(alpha)
        return sigma if scale is None else sigma * scale

    def envelope(self, morphing_weights, basis_weights, alpha) -> torch.Tensor:
        """u_i = Σ_b max_rows|a_b(θ)| · |w_ib| · Π_k max f_ibk · max_rows Π(1 + α_lognormal) ≥ w_i(θ, α)."""
        bound = basis_weights.abs()
        for k, factor in self.factors.items():  # F ≤ Π_k max f_k over the rows' range of α_k
            bound = bound * factor.factor_bound(float(alpha[:, k].min()), float(alpha[:, k].max()))
        envelope = bound @ morphing_weights.abs().max(dim=0).values
        scale = self.lognormal_factor(alpha)
        return envelope if scale is None else envelope * float(scale.abs().max())


class _Normalisation:
    """D_b(α) = Σ_i w_ib (F_ib(α) − 1) / Σ_i w_ib over a whole sample, with its first and second derivatives in
    α, one pass over the events per distinct α (cached: samples reuse a few α), so σ(θ, α) is normalised like the
    whole sample's weights."""

    def __init__(self, basis_weights: torch.Tensor, factors: dict):
        self.basis_weights = basis_weights
        self.totals = basis_weights.sum(dim=0)
        self.factors = [factors[k] for k in sorted(factors)]
        self.cache: dict = {}

    def shift_rows(self, alpha: torch.Tensor) -> torch.Tensor:
        """D(α_row) [G, B] for α rows [G, K_varied]. Where α needs gradients, the cached value plus the second-order
        expansion J δ + ½ δᵀ H δ in δ = α − α_u (zero): the value, the gradient and the Hessian in α are exact
        (third derivatives are not), with plain tensor operations, so autograd, ``torch.autograd.functional``
        and ``torch.func`` transforms all see them."""
        unique, inverse = torch.unique(alpha.detach(), dim=0, return_inverse=True)
        rows = self.shift(unique, order=0)[inverse]
        if alpha.requires_grad or _is_transformed(alpha):
            delta = alpha - unique[inverse]  # [G, K], zero in value
            slope, curvature = self.shift(unique, order=1)[inverse], self.shift(unique, order=2)[inverse]
            rows = rows + (slope * delta[:, None, :]).sum(dim=-1) \
                + 0.5 * (curvature * delta[:, None, :, None] * delta[:, None, None, :]).sum(dim=(-2, -1))
        return rows

    def shift(self, unique: torch.Tensor, order: int) -> torch.Tensor:
        """D [U, B], dD/dα [U, B, K] (order 1) or d²D/dα² [U, B, K, K] (order 2) at distinct α rows [U, K],
        cached, computed in chunks."""
        cache = self.cache.setdefault(order, {})
        keys = [tuple(row) for row in unique.tolist()]
        missing = [i for i, key in enumerate(keys) if key not in cache]
        if missing:
            if len(cache) + len(missing) > MAX_CACHED_NUISANCE_POINTS:
                cache.clear()
            for i, value in zip(missing, self._compute(unique[missing], order), strict=True):
                cache[keys[i]] = value
        return torch.stack([cache[key] for key in keys])

    def _compute(self, alpha: torch.Tensor, order: int) -> torch.Tensor:
        """The derivatives of order ``order`` of D at α rows [u, K]: F = Π_k f_k(α_k), so ∂F/∂α_k replaces f_k by
        f_k', and ∂²F/∂α_k∂α_l replaces f_k by f_k'' (k = l) or f_k and f_l by f_k', f_l' (k ≠ l)."""
        n, basis = self.basis_weights.shape
        width = max(factor.log_up.shape[1] for factor in self.factors)
        chunk = max(1, MAX_CHUNK_ELEMENTS // (n * width))
        results = []
        for start in range(0, alpha.shape[0], chunk):
            points = alpha[start:start + chunk, None, None, :]  # [u, 1, 1, K]
            values = [factor.factor(points[..., k]) for k, factor in enumerate(self.factors)]  # [u, n, 1 or B]
            if order == 0:
                results.append(self._sum_over_events(_product(values) - 1.0))
                continue
            slopes = [factor.factor_slope(points[..., k]) for k, factor in enumerate(self.factors)]
            if order == 1:
                partials = [_product(_replaced(values, {k: slopes[k]})) for k in range(len(values))]
                results.append(torch.stack([self._sum_over_events(partial) for partial in partials], dim=-1))
                continue
            curvatures = [factor.factor_curvature(points[..., k]) for k, factor in enumerate(self.factors)]
            rows = []
            for k in range(len(values)):
                row = [self._sum_over_events(_product(_replaced(values, {k: curvatures[k]} if k == other else
                                                                  {k: slopes[k], other: slopes[other]})))
                       for other in range(len(values))]
                rows.append(torch.stack(row, dim=-1))
            results.append(torch.stack(rows, dim=-2))
        return torch.cat(results)

    def _sum_over_events(self, per_event: torch.Tensor) -> torch.Tensor:
        """Σ_i w_ib g_ib / Σ_i w_ib for g [u, n, 1 or B]: [u, B]."""
        if per_event.shape[-1] == 1:
            return (per_event[..., 0] @ self.basis_weights) / self.totals
        return (per_event * self.basis_weights).sum(dim=1) / self.totals


def _replaced(values: list, replacements: dict) -> list:
    return [replacements.get(k, value) for k, value in enumerate(values)]


def _is_transformed(alpha: torch.Tensor) -> bool:
    """Whether α carries derivatives that ``requires_grad`` does not show: a torch.func transform's wrapper
    (jacfwd, hessian) or a forward-mode dual tensor. Where torch cannot tell, assume it does (exact, slower)."""
    wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)
    if wrapped is None:
        return True
    return bool(wrapped(alpha)) or torch.autograd.forward_ad.unpack_dual(alpha).tangent is not None


def _events_flagged(flags: torch.Tensor) -> int:
    """How many events (rows) have a flag set in ``flags`` [n] or [n, B]."""
    return int(flags.any(dim=-1).sum()) if flags.ndim > 1 else int(flags.sum())


def _product(tensors: list) -> torch.Tensor:
    result = tensors[0]
    for tensor in tensors[1:]:
        result = result * tensor
    return result


def _ratio_interpolator(name: str, given, basis_weights: torch.Tensor, reference: torch.Tensor) -> Interpolator:
    """The code4 interpolator of one nuisance's per-event ratios, after checking its variations."""
    if not (isinstance(given, (tuple, list)) and len(given) == 2):
        raise ValueError(f"WeightedEvents: variations['{name}'] must be a pair (down_weights, up_weights)")
    n, basis = basis_weights.shape
    pair = []
    for label, weights in zip(("down", "up"), given, strict=True):
        weights = _as_float64(f"variation '{name}' {label} weights", weights)
        if weights.shape not in ((n,), (n, basis)):
            raise ValueError(f"WeightedEvents: variation '{name}' {label} weights must have shape [n_events] = [{n}] "
                             f"or [n_events, n_basis] = [{n}, {basis}], got {list(weights.shape)}")
        totals = weights.sum(dim=0).reshape(-1)
        if not torch.all(totals > 0):
            raise ValueError(f"WeightedEvents: variation '{name}' {label} weights have a total ≤ 0 "
                             f"({totals.tolist()}); a variation of σ must keep it positive")
        pair.append(weights)
    down, up = pair
    if down.shape != up.shape:
        raise ValueError(f"WeightedEvents: variation '{name}' down and up weights differ in shape: "
                         f"{list(down.shape)} and {list(up.shape)}")
    nominal = reference if down.ndim == 1 else basis_weights
    empty = nominal == 0
    created = empty & ((down != 0) | (up != 0))
    if created.any():
        raise ValueError(f"WeightedEvents: variation '{name}': {_events_flagged(created)} events have nominal weight "
                         f"0 but a nonzero varied weight; a per-event factor cannot create weight")
    flipped = ~empty & ~((down / nominal > 0) & (up / nominal > 0))
    if flipped.any():
        raise ValueError(f"WeightedEvents: variation '{name}': {_events_flagged(flipped)} events have a down or up "
                         f"weight that is zero or of the other sign than their nominal weight; per-event factors "
                         f"must be positive")
    if down.ndim == 1:
        nominal, down, up = nominal[:, None], down[:, None], up[:, None]
    return Interpolator(nominal, down, up, PER_EVENT_CODE)
