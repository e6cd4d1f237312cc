"""Auto: fit several estimators on the same data and select or weight them by a held-out criterion that needs no
truth (docs/theory.md, "Choosing among estimators without the truth"; docs/methods/auto.md).

Two criteria need no truth. The weighted score residual Σ_j (t̂_j(x|θ) − t_j(x,z|θ))² / Var(t_j) at the θ that
made x has the expectation E‖t̂ − t(x)‖² plus a constant that no estimator changes; ALICE's cross-entropy
against the joint soft labels s(x,z) = σ(−log r(x,z)) has E_x[KL(Bern(s(x)) ‖ Bern(ŝ(x)))] plus a constant.
Ranking candidates by either ranks them by a true error, up to the held-out noise. The default uses the score
residual where the data hold joint scores: the cross-entropy hardly sees pairs where one hypothesis dominates
(s(1 − s) → 0), which is where the squared error of log r̂ concentrates, and on the task suite stacking by the
score residual came closest to the best single candidate (benchmarks/results/auto_study.md).
"""

from __future__ import annotations

import copy
import inspect
import math
import time
import warnings

import torch

from ..data.augmented import AugmentedData
from .base import REGISTRY, FitSeeds, save_state
from .selection import ratio_criterion_rows, ratio_gate, score_residual_rows, stack_weights
from .training import NonFiniteLossError

__all__ = ["Auto", "DEFAULT_CANDIDATES", "ratio_criterion_rows", "score_residual_rows"]

# a ratio model and a likelihood model: on the task suite each wins where the other fails (ALICES where the
# classifier's bounded targets suffice, SCANDAL where |log r| is large or x is heavy-tailed), and a third candidate
# (ALICE) earned little weight (benchmarks/results/auto_study.md)
DEFAULT_CANDIDATES = ("ALICES", "SCANDAL")
CRITERIA = ("auto", "alice", "carl", "score", "log_r")
COMBINATIONS = ("stack", "select", "decisive")
DECISIVE = 3.0  # combine="decisive": select the best where it beats every other by this many paired standard errors
MIN_WEIGHT = 1e-3  # stacked members lighter than this are dropped after fitting, the rest renormalised
CRITERION_ROWS = 1_000_000  # at most this many held-out rows are scored (bounded memory for data on disk)
NOT_CANDIDATES = ("Auto", "Ensemble", "RatioEstimator", "StatisticDensity")  # composites and building blocks
CRITERION_NAMES = {"alice": "ALICE cross-entropy", "carl": "CARL cross-entropy",
                   "score": "weighted score residual", "log_r": "squared residual of the joint log r"}


def accepted_arguments(cls) -> set[str]:
    """The keyword names that ``cls``'s constructors (along its MRO) accept by name."""
    names = set()
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass):
            continue
        names |= {name for name, parameter in inspect.signature(klass.__init__).parameters.items()
                  if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)}
    return names


class Auto:
    """Several candidate estimators fitted on the same data and selected or stacked by a held-out criterion that
    needs no truth: log r̂(x|θ0,θ1) = Σ_k w_k log r̂_k(x|θ0,θ1), w_k ≥ 0, Σ_k w_k = 1.

    Arguments:

    - ``candidates``: method names from the registry ("ALICES", "SCANDAL", …) or unfitted estimator instances;
      ``DEFAULT_CANDIDATES`` = ("ALICES", "SCANDAL"). Candidates whose required fields the data lack
      are skipped with one warning.
    - ``combine``: "stack" (the default: convex weights w = softmax(a), a ∈ Rᵏ, minimising the held-out criterion
      of Σ_k w_k log r̂_k by L-BFGS; members with w_k < 1e-3 are then dropped and the rest renormalised) or
      "select" (the one candidate with the lowest criterion, w = 1) or "decisive" (select where the best beats
      every other by more than 3 paired standard errors of the held-out criterion, else stack).
    - ``criterion``: "score" (the weighted score residual, module notes: the weights that pool t̂ = Σ_k w_k t̂_k
      best also pool log r̂, whose θ-gradient that is), "alice" (ALICE's cross-entropy against the joint soft
      labels s(x,z) = σ(−log r(x,z))), "carl" (CARL's, against y), "log_r" (the squared residual against the joint
      log r(x,z): its minimiser is the latent-averaged E[log r(x,z) | x], not log r(x), so it favours regressions
      on log r(x,z); kept for comparison) or "auto" (the default: "score" where the data have joint scores and
      every candidate gives ``score``, else "alice" where they have ``log_r_xz``, else "carl").
    - ``gate`` (False): where the density members' pooled |log r̂| exceeds the ratio members' ``clip_log_r`` (20),
      use the density members alone (NDE, SCANDAL: ``ratio_gate``). The ratio family never saw a target beyond its
      clip, and its cross-entropies are flat there (s(1 − s) → 0), so no held-out criterion can tell how wrong its
      log r̂ is on such pairs; a density's log p̂(x|θ0) − log p̂(x|θ1) has no such bound. Without a density member
      among the kept ones the gate does nothing. Off by default: on the task suite it helped where the density
      member is good at large |log r| (hierarchical, slcp) and cost as much where it is not (shape, counts):
      docs/benchmarks.md, "The automatic choice".
    - ``**common``: constructor arguments (``hidden``, ``learning_rate``, …) for the candidates built from names;
      each gets those its constructor accepts.

    After ``fit``: ``members_`` (the kept, fitted candidates), ``weights_`` [k] (float64, summing to 1),
    ``selection_`` (one dict per fitted candidate: name, criterion, difference_error, score_residual, weight,
    fit_seconds, epochs), ``criterion_`` (the criterion used), ``combined_criterion_`` (that of the combination),
    ``skipped_`` (name → missing fields), ``parameter_names_``; ``report()`` prints ``selection_`` as a table.

    >>> import sluice, torch
    >>> simulator = sluice.simulators.GaussianMixture()               # x [n, 2], θ = (a, b)
    >>> data = sluice.simulate(simulator, simulator.default_prior(), n=1000, seed=0)
    >>> auto = sluice.estimators.Auto(hidden=(32, 32)).fit(data, epochs=2)
    >>> [row["name"] for row in auto.selection_]
    ['ALICES', 'SCANDAL']
    >>> round(sum(row["weight"] for row in auto.selection_), 6)
    1.0
    >>> x, theta0, theta1 = data.x[:5], torch.tensor([0.2, -0.1]), torch.tensor([0.0, 0.0])
    >>> mean, spread = auto.log_ratio_with_uncertainty(x, theta0, theta1)       # Σ w log r̂_k, its weighted spread
    >>> mean.shape, spread.shape
    (torch.Size([5]), torch.Size([5]))
    """

    def __init__(self, candidates=DEFAULT_CANDIDATES, combine: str = "stack", criterion: str = "auto",
                 gate: bool = False, **common):
        self.gate = bool(gate)
        self.candidates = [candidates] if isinstance(candidates, str) else list(candidates)
        if not self.candidates:
            raise ValueError("Auto needs at least one candidate")
        if combine not in COMBINATIONS:
            raise ValueError(f"combine must be one of {COMBINATIONS}, got {combine!r}")
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        self.combine, self.criterion, self.common = combine, criterion, dict(common)
        names = [c for c in self.candidates if isinstance(c, str)]
        unknown = [name for name in names if name not in REGISTRY or name in NOT_CANDIDATES]
        if unknown:
            known = sorted(name for name in REGISTRY if name not in NOT_CANDIDATES)
            raise ValueError(f"Auto: unknown candidate(s) {unknown}; use estimator names such as {', '.join(known)}, "
                             "or unfitted estimator instances")
        for candidate in self.candidates:
            if not isinstance(candidate, str) and not (hasattr(candidate, "fit") and hasattr(candidate, "log_ratio")):
                raise TypeError(f"Auto: a candidate must be a method name or an unfitted estimator with fit and "
                                f"log_ratio, got {type(candidate).__name__}")
        if self.common:
            accepted = set().union(*(accepted_arguments(REGISTRY[name]) for name in names)) if names else set()
            stray = sorted(set(self.common) - accepted)
            if stray:
                raise TypeError(f"Auto: no candidate built from a name accepts {stray}")

    # --- fitting ----------------------------------------------------------------------------------------
    def _build(self) -> list:
        """Fresh estimators for the named candidates (each given the ``common`` arguments it accepts), the
        instances as they are."""
        built = []
        for candidate in self.candidates:
            if isinstance(candidate, str):
                cls = REGISTRY[candidate]
                accepted = accepted_arguments(cls)
                built.append(cls(**{k: v for k, v in self.common.items() if k in accepted}))
            else:
                built.append(candidate)
        return built

    @staticmethod
    def _names(estimators) -> list[str]:
        """Class names, numbered where one repeats (ALICES, ALICES#2)."""
        names, seen = [], {}
        for estimator in estimators:
            base = type(estimator).__name__
            seen[base] = seen.get(base, 0) + 1
            names.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
        return names

    def _resolve_criterion(self, data: AugmentedData, estimators: list) -> str:
        """"auto": the score residual where the data hold joint scores and every candidate gives t̂ (measured on the
        task suite, it ranks candidates by the error of log r̂ best: benchmarks/results/auto_study.md), else
        ALICE's cross-entropy where they hold log r(x,z), else CARL's."""
        if self.criterion == "auto":
            if data.has("t_xz0") and data.has("t_xz1") and all(hasattr(e, "score") for e in estimators):
                return "score"
            return "alice" if data.has("log_r_xz") else "carl"
        needed = {"alice": ("log_r_xz",), "carl": (), "score": ("t_xz0", "t_xz1"), "log_r": ("log_r_xz",)}[
            self.criterion]
        data.require(needed, user=f"Auto(criterion={self.criterion!r})")
        return self.criterion

    def fit(self, data: AugmentedData, epochs: int | None = None, batch_size: int | None = None,
            validation_fraction: float = 0.2, seed: int = 0, progress: bool | None = None) -> Auto:
        """Fit every usable candidate with the same ``seed`` and ``validation_fraction`` (so all hold out the same
        rows: ``data.split(validation_fraction, FitSeeds.spawn(seed).split)``), score each on those held-out rows
        without gradients, then select or stack; returns self.

        A candidate whose training diverges (``NonFiniteLossError``) is left out with a warning."""
        if not isinstance(data, AugmentedData):
            raise TypeError(f"Auto.fit needs sluice.AugmentedData, got {type(data).__name__}")
        if not validation_fraction:
            raise ValueError("Auto.fit needs held-out rows to choose on: validation_fraction must be > 0")
        estimators = self._build()
        criterion = self._resolve_criterion(data, estimators)
        names = self._names(estimators)
        usable, self.skipped_ = [], {}
        for name, estimator in zip(names, estimators, strict=True):
            missing = [field for field in getattr(estimator, "requires", ()) if not data.has(field)]
            if criterion == "score" and not hasattr(estimator, "score"):
                missing.append("score (the method gives no t̂)")
            if missing:
                self.skipped_[name] = missing
            else:
                usable.append((name, estimator))
        if self.skipped_:
            listed = "; ".join(f"{name} (needs {', '.join(fields)})" for name, fields in self.skipped_.items())
            if not usable:
                raise ValueError(f"Auto: no candidate can train on this data: {listed}. Simulate from a simulator "
                                 "with joint_log_prob, or add black-box candidates (CARL, NDE)")
            warnings.warn(f"Auto: skipping {listed}: the data lack these fields", UserWarning, stacklevel=2)

        fitted = []
        for name, estimator in usable:
            started = time.perf_counter()
            try:
                estimator.fit(data, epochs=epochs, batch_size=batch_size, validation_fraction=validation_fraction,
                              seed=seed, progress=progress)
            except NonFiniteLossError as error:
                warnings.warn(f"Auto: leaving out {name}, whose training diverged: {error}", UserWarning,
                              stacklevel=2)
                continue
            history = getattr(estimator, "history_", None)
            fitted.append({"name": name, "estimator": estimator, "fit_seconds": time.perf_counter() - started,
                           "epochs": len(history.train_loss) if history is not None else None})
        if not fitted:
            raise ValueError("Auto: every candidate's training diverged")

        _, held_out = data.split(validation_fraction, FitSeeds.spawn(seed).split)  # the rows every candidate held out
        held_out = held_out[:CRITERION_ROWS]
        self.criterion_, self.n_held_out_ = criterion, len(held_out)
        self._choose(fitted, held_out, criterion)
        self.parameter_names_ = tuple(data.parameter_names)
        return self

    def _choose(self, fitted: list, rows: AugmentedData, criterion: str) -> None:
        """Score each fitted candidate on ``rows``, then set weights, members and the selection record."""
        x, theta0, theta1, theta = rows.x, rows.theta0, rows.theta1, rows.theta
        t_xz = rows.t_xz
        weight = None if t_xz is None else 1.0 / t_xz.double().var(dim=0).clamp_min(1e-12)
        with torch.no_grad():
            log_r = [entry["estimator"].log_ratio(x, theta0, theta1).double() for entry in fitted]
        scores = [None] * len(fitted)
        if t_xz is not None:  # the score at the θ that made each x (autograd inside, no gradient kept)
            scores = [entry["estimator"].score(x, theta).detach().double() if hasattr(entry["estimator"], "score")
                      else None for entry in fitted]

        def criterion_rows(prediction: torch.Tensor) -> torch.Tensor:
            if criterion == "score":
                return score_residual_rows(prediction, t_xz, weight)
            if criterion == "log_r":
                return (prediction - rows.log_r_xz.double()) ** 2
            return ratio_criterion_rows(prediction, rows, criterion)

        predictions = scores if criterion == "score" else log_r
        per_row = [criterion_rows(p) for p in predictions]
        values = [float(r.mean()) if torch.isfinite(r).all() else math.inf for r in per_row]
        finite = [k for k, v in enumerate(values) if math.isfinite(v)]
        if not finite:
            raise ValueError("Auto: every candidate gave non-finite predictions on the held-out rows")
        best = min(finite, key=lambda k: values[k])
        weights = torch.zeros(len(fitted), dtype=torch.float64)
        if self.combine == "select" or len(finite) == 1 or (self.combine == "decisive" and self._decisive(
                per_row, finite, best)):
            weights[best] = 1.0
        else:
            stacked = torch.stack([predictions[k] for k in finite])
            weights[finite] = stack_weights(stacked, lambda pooled: criterion_rows(pooled).mean())
            weights[weights < MIN_WEIGHT] = 0.0
            weights /= weights.sum()
        pooled = torch.einsum("k,k...->...", weights[finite], torch.stack([predictions[k] for k in finite]))
        self.combined_criterion_ = float(criterion_rows(pooled).mean())

        n = len(rows)
        self.selection_ = []
        for k, entry in enumerate(fitted):
            difference = per_row[k] - per_row[best]
            error = float(difference.std() / math.sqrt(n)) if k != best and math.isfinite(values[k]) and n > 1 else 0.0
            residual = None if scores[k] is None else float(score_residual_rows(scores[k], t_xz, weight).mean())
            self.selection_.append({"name": entry["name"], "criterion": values[k], "difference_error": error,
                                    "score_residual": residual, "weight": float(weights[k]),
                                    "fit_seconds": entry["fit_seconds"], "epochs": entry["epochs"]})
        kept = [k for k in range(len(fitted)) if weights[k] > 0]
        self.members_ = [fitted[k]["estimator"] for k in kept]
        self.weights_ = weights[kept]
        self.gate_ = ratio_gate(self.members_) if self.gate else None

    @staticmethod
    def _decisive(per_row: list, finite: list, best: int) -> bool:
        """Whether candidate ``best`` beats every other finite one by more than DECISIVE paired standard errors."""
        for k in finite:
            if k == best:
                continue
            difference = per_row[k] - per_row[best]
            if float(difference.mean()) <= DECISIVE * float(difference.std()) / math.sqrt(difference.numel()):
                return False
        return True

    # --- predictions ------------------------------------------------------------------------------------
    def _require_fitted(self) -> None:
        if not hasattr(self, "members_"):
            raise RuntimeError("Auto is not fitted yet: call fit(data) first")

    def _stack(self, method: str, *args) -> torch.Tensor:
        """The kept members' ``method(*args)`` stacked [k, ...]; AttributeError naming members that lack it."""
        self._require_fitted()
        missing = [type(m).__name__ for m in self.members_ if not hasattr(m, method)]
        if missing:
            raise AttributeError(f"Auto.{method}: kept member(s) {missing} do not provide it")
        return torch.stack([getattr(member, method)(*args) for member in self.members_])

    def _pool(self, values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Σ_k w_k values_k over the first axis, in the members' dtype; ``weights`` [k] or per row [k, n]
        (default: ``weights_``)."""
        weights = (self.weights_ if weights is None else weights).to(values.dtype)
        weights = weights.reshape(weights.shape + (1,) * (values.ndim - weights.ndim))
        return (weights * values).sum(dim=0)

    def _row_weights(self, values: torch.Tensor) -> torch.Tensor:
        """The weights per row [k, n] for log r̂ values [k, n]: ``weights_``, except on rows where the density
        members' pooled |log r̂| exceeds the gate (``ratio_gate``), which take the density members' weights
        renormalised among themselves."""
        weights = self.weights_.to(values.dtype)[:, None].expand(values.shape).clone()
        gate = getattr(self, "gate_", None)  # None: no gate (off, or no density member kept)
        if gate is None:
            return weights
        threshold, bounded = gate
        density = (~bounded).to(values.dtype)[:, None] * weights
        density = density / density.sum(dim=0, keepdim=True)
        beyond = self._pool(values, density).abs() > threshold
        return torch.where(beyond[None, :], density, weights)

    def log_ratio_with_uncertainty(self, x, theta0, theta1) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ_k w_k log r̂_k, √(Σ_k w_k (log r̂_k − mean)²)) over the kept members, each [n], with the weights of
        each row after the gate (``gate``); the spread is 0 with one member. It measures how much the members
        disagree, not the error of the mean."""
        values = self._stack("log_ratio", x, theta0, theta1)
        weights = self._row_weights(values)
        mean = self._pool(values, weights)
        spread = self._pool((values - mean) ** 2, weights).clamp_min(0.0).sqrt()
        return mean, spread

    def log_ratio(self, x, theta0, theta1) -> torch.Tensor:
        """log r̂(x|θ0,θ1) = Σ_k w_k log r̂_k(x|θ0,θ1), shape [n], with the weights of each row after the gate."""
        return self.log_ratio_with_uncertainty(x, theta0, theta1)[0]

    def score(self, x, theta) -> torch.Tensor:
        """t̂(x|θ) = Σ_k w_k t̂_k(x|θ), shape [n, p] (the θ-gradient of the pooled log r̂'s potential); every kept
        member must give a score."""
        return self._pool(self._stack("score", x, theta))

    def log_likelihood(self, x, theta) -> torch.Tensor:
        """Σ_k w_k log p̂_k(x|θ), shape [n]: a log-linear pool of the members' densities, not normalised in x (its
        differences in θ, the log r̂ above, are what inference uses); every kept member must give one."""
        return self._pool(self._stack("log_likelihood", x, theta))

    # --- reporting --------------------------------------------------------------------------------------
    def report(self) -> str:
        """``selection_`` as a text table: per candidate its held-out criterion, the difference to the best ± the
        paired standard error, the weighted score residual, the weight, the fit time and the epochs run."""
        self._require_fitted()
        header = (f"Auto ({self.combine}; criterion: {CRITERION_NAMES[self.criterion_]} on {self.n_held_out_} "
                  f"held-out rows; combined: {self.combined_criterion_:.5g})")
        columns = ("candidate", "criterion", "vs best ± se", "score residual", "weight", "fit s", "epochs")
        best = min(row["criterion"] for row in self.selection_)
        lines = []
        for row in self.selection_:
            gap = row["criterion"] - best
            lines.append((row["name"], f"{row['criterion']:.5g}", f"{gap:+.3g} ± {row['difference_error']:.2g}",
                          "—" if row["score_residual"] is None else f"{row['score_residual']:.4g}",
                          f"{row['weight']:.3f}", f"{row['fit_seconds']:.1f}",
                          "—" if row["epochs"] is None else str(row["epochs"])))
        widths = [max(len(column), *(len(line[i]) for line in lines)) for i, column in enumerate(columns)]
        table = [header, "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
        table += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
        table += [f"skipped {name}: needs {', '.join(fields)}" for name, fields in self.skipped_.items()]
        return "\n".join(line.rstrip() for line in table)

    # --- storage ----------------------------------------------------------------------------------------
    def save(self, path, overwrite: bool = False) -> None:
        """Write the kept members, their weights and the selection record to ``path`` (``sluice.load`` reads it)."""
        self._require_fitted()
        unsaveable = [type(m).__name__ for m in self.members_ if not hasattr(m, "_state")]
        if unsaveable:
            raise TypeError(f"Auto.save: member(s) {unsaveable} are not sluice estimators and cannot be saved")
        names = [c if isinstance(c, str) else type(c).__name__ for c in self.candidates]
        state = {"estimator": "Auto", "members": [m._state() for m in self.members_], "weights": self.weights_.clone(),
                 "params": {"candidates": names, "combine": self.combine, "criterion": self.criterion,
                            "gate": self.gate, "common": dict(self.common)},
                 "criterion": self.criterion_, "combined_criterion": self.combined_criterion_,
                 "n_held_out": self.n_held_out_, "selection": [dict(row) for row in self.selection_],
                 "skipped": {name: list(fields) for name, fields in self.skipped_.items()},
                 "parameter_names": list(self.parameter_names_)}
        save_state(state, path, overwrite)

    @classmethod
    def _from_state(cls, state: dict) -> Auto:
        params = state["params"]
        auto = cls.__new__(cls)  # the saved candidates may include instances of classes no longer at hand
        auto.candidates, auto.common = list(params["candidates"]), dict(params["common"])
        auto.combine, auto.criterion = params["combine"], params["criterion"]
        auto.gate = params.get("gate", False)  # files written before the gate existed pooled without one
        auto.members_ = [REGISTRY[m["estimator"]]._from_state(copy.copy(m)) for m in state["members"]]
        auto.gate_ = ratio_gate(auto.members_) if auto.gate else None
        auto.weights_ = state["weights"].to(torch.float64)
        auto.criterion_, auto.combined_criterion_ = state["criterion"], state["combined_criterion"]
        auto.n_held_out_, auto.selection_ = state["n_held_out"], [dict(row) for row in state["selection"]]
        auto.skipped_ = {name: list(fields) for name, fields in state["skipped"].items()}
        auto.parameter_names_ = tuple(state["parameter_names"])
        return auto

    def __len__(self) -> int:
        self._require_fitted()
        return len(self.members_)

    def __repr__(self) -> str:
        common = "".join(f", {k}={v!r}" for k, v in self.common.items())
        gate = ", gate=True" if self.gate else ""
        return (f"Auto(candidates={self.candidates!r}, combine={self.combine!r}, criterion={self.criterion!r}"
                f"{gate}{common})")


REGISTRY["Auto"] = Auto
