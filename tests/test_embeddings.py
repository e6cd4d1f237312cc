"""Embedding networks (sluice.estimators.embeddings) in the ratio and posterior families, and NPE's prior warning.

Toy: θ ~ N(0, 1) and m i.i.d. trials x_j ~ N(θ, 1). Then log p(x|θ) = −½ Σ_j (x_j − θ)² + const, the score is
Σ_j (x_j − θ), and the posterior is exactly N(S/(1 + m), 1/(1 + m)), S = Σ_j x_j: its variance shrinks like
1/(1 + m) whatever the observation.
"""

import math
import statistics
import warnings

import pytest
import torch
import torch.nn as nn
from torch.distributions import Independent, Normal

import sluice
from sluice.estimators import ALICES, NDE, NPE
from sluice.estimators.embeddings import EMBEDDINGS, describe_embedding, make_embedding, pad_trials

PRIOR = Independent(Normal(torch.zeros(1), torch.ones(1)), 1)
TINY = dict(hidden=(16, 16), batch_size=64)


def trials_data(n: int, m: int | None, seed: int, max_trials: int = 16):
    """AugmentedData of the toy with m trials per row (None: m_i uniform in 1..max_trials, padded with a mask),
    with the exact joint fields of a ratio sample: y = 0 rows drawn at θ0, y = 1 rows at θ1."""
    generator = torch.Generator().manual_seed(seed)
    theta0, theta1 = torch.randn(n, 1, generator=generator), torch.randn(n, 1, generator=generator)
    y = torch.randint(0, 2, (n,), generator=generator).float()
    theta = torch.where(y[:, None] == 0, theta0, theta1)
    counts = torch.randint(1, max_trials + 1, (n,), generator=generator) if m is None else torch.full((n,), m)
    rows = [theta[i] + torch.randn(int(counts[i]), 1, generator=generator) for i in range(n)]
    log_p = torch.stack([torch.stack([-0.5 * ((r - t[i]) ** 2).sum() for t in (theta0, theta1)]) for i, r in
                         enumerate(rows)])
    t_xz = [torch.stack([(r - t[i]).sum(dim=0) for i, r in enumerate(rows)]) for t in (theta0, theta1)]
    x = pad_trials(rows) if m is None else torch.stack(rows)
    return sluice.AugmentedData(theta0, theta1, y, x, log_r_xz=log_p[:, 0] - log_p[:, 1], t_xz0=t_xz[0],
                                t_xz1=t_xz[1], parameter_names=["mu"])


def built(name: str, x: torch.Tensor) -> nn.Module:
    return make_embedding(describe_embedding(name, x), name, (16, 16), "silu").eval()


# --- the built-in networks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, shape", [("mlp", (5, 3, 4)), ("set", (5, 7, 2)), ("set", (5, 7)),
                                         ("masked_set", (5, 7, 3)), ("conv1d", (5, 40)), ("conv1d", (5, 2, 40)),
                                         ("conv2d", (5, 16, 16)), ("conv2d", (5, 2, 16, 16))])
def test_each_builtin_maps_x_of_its_shape_to_one_feature_vector_per_row(name, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    if name == "masked_set":
        x[..., -1] = 1.0
    features = built(name, x)(x)
    assert features.ndim == 2 and features.shape[0] == shape[0]
    assert torch.isfinite(features).all()


def test_set_embedding_is_exactly_invariant_to_the_order_of_the_trials():
    x = torch.randn(20, 9, 2, generator=torch.Generator().manual_seed(1))
    embedding = built("set", x)
    for seed in range(3):
        order = torch.randperm(9, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(embedding(x[:, order]), embedding(x))
    assert not torch.equal(embedding(x[:, :5]), embedding(x)), "the features ignore the trials"


def test_masked_set_pools_only_the_trials_in_any_order_with_any_padding():
    generator = torch.Generator().manual_seed(2)
    observations = [torch.randn(m, 2, generator=generator) for m in (1, 4, 9)]
    padded = pad_trials(observations)
    embedding = built("masked_set", padded)
    features = embedding(padded)
    shuffled = padded[:, torch.randperm(padded.shape[1], generator=generator)]  # padding among the trials
    assert torch.equal(embedding(shuffled), features)
    # another amount of padding changes the shapes the sums run over, so only float32 rounding may differ
    # (assert_close's float32 defaults: a relative 1.3e-6, an absolute 1e-5)
    wider = pad_trials(observations + [torch.zeros(15, 2)])[:3]
    torch.testing.assert_close(embedding(wider), features)
    alone = torch.cat([embedding(pad_trials([o])) for o in observations])  # each observation unpadded
    torch.testing.assert_close(alone, features)


def test_conv2d_embedding_is_the_image_encoder_of_the_conv_network():
    x = torch.randn(4, 16, 16)
    embedding = built("conv2d", x)
    assert type(embedding.encoder).__name__ == "ImageEncoder"
    with pytest.raises(ValueError, match="16, 16"):
        embedding(torch.randn(4, 8, 8))


def test_unknown_embeddings_and_wrong_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match="unknown embedding"):
        NPE(embedding="transformer")
    with pytest.raises(ValueError, match="pass the embedding alone"):
        ALICES(network="conv", embedding="conv2d")
    with pytest.raises(ValueError, match="trained on 2 channel"):
        built("conv1d", torch.randn(3, 2, 30))(torch.randn(3, 30))
    assert set(EMBEDDINGS) == {"mlp", "set", "masked_set", "conv1d", "conv2d"}


# --- the families ---------------------------------------------------------------------------------------------
def test_the_likelihood_family_refuses_an_embedding_and_says_why():
    with pytest.raises(ValueError, match="density of e\\(x\\)"):
        NDE(embedding="set")


def test_ratio_family_on_a_set_embedding_saves_loads_and_tabulates_consistently(tmp_path):
    data = trials_data(400, 5, seed=3)
    estimator = ALICES(embedding="set", **TINY).fit(data, epochs=2, seed=0, progress=False)
    x, theta0, theta1 = data.x[:6], torch.tensor([0.3]), torch.tensor([-0.2])
    log_r, score = estimator.log_ratio(x, theta0, theta1), estimator.score(x, theta0)
    assert log_r.shape == (6,) and score.shape == (6, 1)
    estimator.save(tmp_path / "alices.pt")
    loaded = sluice.load(tmp_path / "alices.pt")
    assert torch.equal(loaded.log_ratio(x, theta0, theta1), log_r)
    assert torch.equal(loaded.score(x, theta0), score)
    # the inference layer's table encodes each x once: the same numbers as log_ratio row by row
    table = estimator.log_ratio_table(x, torch.stack([theta0, theta1]), theta1)
    torch.testing.assert_close(table[0], log_r, rtol=0, atol=1e-5)
    torch.testing.assert_close(table[1], torch.zeros(6), rtol=0, atol=1e-5)


class MeanAndSpread(nn.Module):
    """A user's embedding: x [n, m, 1] → [n, 3] (a learned map of the trials' mean, spread and count)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 3)

    def forward(self, x):
        return self.linear(torch.cat([x.mean(dim=1), x.std(dim=1), torch.full_like(x[:, 0], x.shape[1])], dim=1))


def test_a_users_module_is_trained_as_a_copy_and_is_passed_again_at_load(tmp_path):
    data = trials_data(300, 4, seed=4)
    module = MeanAndSpread()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    estimator = NPE(embedding=module, **TINY).fit(data, epochs=2, seed=0, prior=PRIOR, progress=False)
    assert all(torch.equal(module.state_dict()[k], v) for k, v in before.items()), "fit changed the user's module"
    estimator.save(tmp_path / "npe.pt")
    with pytest.raises(ValueError, match="MeanAndSpread"):
        sluice.load(tmp_path / "npe.pt")
    loaded = NPE.load(tmp_path / "npe.pt", embedding=MeanAndSpread())
    theta, x = torch.linspace(-1, 1, 5)[:, None], data.x[0]
    assert torch.equal(loaded.log_prob(theta, x), estimator.log_prob(theta, x))
    assert torch.equal(loaded.sample(x, 50, seed=1), estimator.sample(x, 50, seed=1))


def test_npe_models_saved_before_embeddings_still_load(tmp_path):
    data = trials_data(200, 1, seed=5)
    flat = sluice.AugmentedData(data.theta0, data.theta0, torch.zeros(200), data.x[:, :, 0],
                                parameter_names=["mu"])
    estimator = NPE(**TINY).fit(flat, epochs=1, prior=PRIOR, progress=False)
    state = estimator._state()
    state["info"] = {k: v for k, v in state["info"].items() if k not in ("embedding", "x_shape")}
    torch.save(state, tmp_path / "old.pt")
    loaded = sluice.load(tmp_path / "old.pt")
    theta = torch.linspace(-1, 1, 5)[:, None]
    assert torch.equal(loaded.log_prob(theta, flat.x[0]), estimator.log_prob(theta, flat.x[0]))


def test_npe_fit_without_a_prior_warns_that_it_means_a_flat_one():
    data = trials_data(200, 1, seed=6)
    flat = sluice.AugmentedData(data.theta0, data.theta0, torch.zeros(200), data.x[:, :, 0],
                                parameter_names=["mu"])
    with pytest.warns(UserWarning, match="flat on R\\^p.*prior=prior"):
        NPE(**TINY).fit(flat, epochs=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        estimator = NPE(**TINY).fit(flat, epochs=1, prior="flat", progress=False)
    assert estimator.info_["prior"] == "flat"
    with pytest.raises(TypeError, match="Distribution or 'flat'"):
        NPE(**TINY).fit(flat, epochs=1, prior="uniform", progress=False)


def test_npe_on_a_varying_number_of_trials_concentrates_like_one_over_one_plus_m():
    """q̂(θ | x_1..x_m), trained once on 1..16 trials per observation, against the exact N(S/(1+m), 1/(1+m)).

    Tolerances. Monte Carlo: each variance comes from 20 observations × 2000 draws, a relative error of
    √(2/40 000) ≈ 0.7%, so the slope of log variance against log(1 + m) between m = 1 and 16 (exact: −1) has a
    standard deviation of about 0.005, and 5σ = 0.025. The fit itself (2 000 rows, 30 epochs) is not exact: we
    allow the slope ±0.25 and the posterior means an rms error of half a posterior width. Both are far from what
    a wrong embedding gives: one blind to the number of trials has slope 0, one blind to the trials' values
    puts the means off by about a prior width.
    """
    data = trials_data(2000, None, seed=7)
    estimator = NPE(embedding="masked_set", hidden=(32, 32), transforms=2, batch_size=64, learning_rate=3e-3)
    estimator.fit(data, epochs=30, seed=0, prior=PRIOR, progress=False)
    variances, errors = {}, []
    for m in (1, 4, 16):
        observed = trials_data(20, m, seed=100 + m)
        draws = [estimator.sample(pad_trials([x])[0], 2000, seed=i) for i, x in enumerate(observed.x)]
        variances[m] = statistics.fmean(float(d.var()) for d in draws)
        exact_means = observed.x.sum(dim=(1, 2)) / (1 + m)
        errors += [(float(d.mean()) - float(mu)) * math.sqrt(1 + m) for d, mu in zip(draws, exact_means, strict=True)]
    slope = math.log(variances[16] / variances[1]) / math.log(17 / 2)
    assert abs(slope + 1) < 0.25, (slope, variances)
    assert math.sqrt(statistics.fmean(e * e for e in errors)) < 0.5, errors
