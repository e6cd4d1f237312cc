"""sbi 0.27's estimators as benchmark peers (the bench extra: ``pip install 'sluice-sbi[bench]'``), behind the calls
the benchmarks make: ``log_ratio(x, theta0, theta1)`` and, for NPE, ``sample``.

sbi trains with its own defaults (NPE/NLE: MAF; NRE: NRE_B with a ResNet classifier; batch 200, learning rate
5e-4, 10% validation, stop after 20 epochs without improvement) except ``max_num_epochs``, set to the same
optimiser-step budget as sluice's default (``STEPS``), so neither side gets more steps than the other.
"""

from __future__ import annotations

import contextlib
import io
import math

import torch

STEPS = 6000  # the optimiser-step budget of one fit
KINDS = ("sbi NPE", "sbi NLE", "sbi NRE")


class SbiSurrogate:
    """A trained sbi network with sluice's ``log_ratio`` (and ``sample`` for NPE)."""

    def __init__(self, kind: str, network, posterior, parameter_names):
        self.kind, self.network, self.posterior = kind, network, posterior
        self.parameter_names_ = tuple(parameter_names)

    def _log_ratio_part(self, x, theta0, theta1):
        if self.kind == "sbi NLE":  # log q(x|θ0) − log q(x|θ1)
            return (self.network.log_prob(x[None], condition=theta0)[0]
                    - self.network.log_prob(x[None], condition=theta1)[0])
        if self.kind == "sbi NRE":  # the classifier's logit is log r(x|θ) up to a function of x, which cancels
            return self.network(theta0, x) - self.network(theta1, x)
        # NPE: log q(θ0|x) − log q(θ1|x), equal to log r where the prior is flat (a box)
        return (self.network.log_prob(theta0[None], condition=x)[0]
                - self.network.log_prob(theta1[None], condition=x)[0])

    def log_ratio(self, x, theta0, theta1) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32)
        x = x[:, None] if x.ndim == 1 else x
        theta0, theta1 = (torch.as_tensor(t, dtype=torch.float32).expand(x.shape[0], -1) for t in (theta0, theta1))
        with torch.no_grad():
            return torch.cat([self._log_ratio_part(x[i:i + 20_000], theta0[i:i + 20_000], theta1[i:i + 20_000])
                              for i in range(0, x.shape[0], 20_000)])

    def sample(self, x, n: int, seed: int = 0):
        torch.manual_seed(seed)
        return self.posterior.sample((n,), x=x.reshape(1, -1), show_progress_bars=False)


class SilentTracker:
    """An sbi tracker that records nothing (sbi's default writes TensorBoard logs into ./sbi-logs)."""

    log_dir = None

    def log_metric(self, *args, **kwargs) -> None:
        pass

    log_metrics = log_params = add_figure = flush = log_metric


def fit_sbi(kind: str, data, prior, seed: int):
    """Train sbi's ``kind`` ("sbi NPE", "sbi NLE" or "sbi NRE") on the (θ, x) of ``data``; returns
    (SbiSurrogate, epochs trained)."""
    from sbi.inference import NLE_A, NPE_C, NRE_B

    if kind not in KINDS:
        raise ValueError(f"unknown sbi method {kind!r}; choose one of {list(KINDS)}")
    trainer = {"sbi NPE": NPE_C, "sbi NLE": NLE_A, "sbi NRE": NRE_B}[kind](
        prior=prior, show_progress_bars=False, tracker=SilentTracker())
    torch.manual_seed(seed)
    trainer.append_simulations(data.theta, data.x)
    batches = math.ceil(0.9 * len(data) / 200)  # sbi's defaults: 10% validation, batch 200
    with contextlib.redirect_stdout(io.StringIO()):  # sbi prints "converged after N epochs"
        network = trainer.train(max_num_epochs=math.ceil(STEPS / batches), show_train_summary=False)
    posterior = trainer.build_posterior(network) if kind == "sbi NPE" else None
    return SbiSurrogate(kind, network, posterior, data.parameter_names), trainer.summary["epochs_trained"][-1]
