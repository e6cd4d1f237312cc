"""PPX messages and distributions: every message survives encode → decode, flatc reads what sluice writes and sluice
reads what flatc writes (the schema is the wire format), a corrupt buffer is a PPXProtocolError and nothing else,
the distributions score as scipy.stats does (exactly at probabilities 0 and 1), and draw as torch.distributions
do."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from conftest import assert_mean_close

pytest.importorskip("flatbuffers", reason='PPX needs flatbuffers: pip install "sluice-sbi[ppx]"')

from sluice.simulators.ppx import SCHEMA  # noqa: E402  (after the skip)
from sluice.simulators.ppx import distributions as ppx_distributions  # noqa: E402
from sluice.simulators.ppx import messages as m  # noqa: E402
from sluice.simulators.ppx.errors import (  # noqa: E402
    PPXDistributionError,
    PPXProtocolError,
    PPXUnknownDistributionError,
)

# one of each distribution, with parameters of several shapes (0-d, 1-d, broadcast against each other)
DISTRIBUTIONS = [
    m.Distribution("Normal", mean=1.5, stddev=[0.5, 2.0]),
    m.Distribution("Uniform", low=-1.0, high=3.0),
    m.Distribution("Categorical", probs=[[0.2, 0.3, 0.5], [0.6, 0.4, 0.0]]),
    m.Distribution("Poisson", rate=[[1.0, 4.0], [0.5, 9.0]]),
    m.Distribution("Bernoulli", probs=0.3),
    m.Distribution("Beta", concentration1=2.0, concentration0=[0.7, 5.0]),
    m.Distribution("Exponential", rate=1.7),
    m.Distribution("Gamma", concentration=[0.6, 3.0], rate=2.0),
    m.Distribution("LogNormal", loc=0.2, scale=0.7),
    m.Distribution("Binomial", total_count=12.0, probs=[0.1, 0.8]),
    m.Distribution("Weibull", scale=2.0, concentration=1.3),
]
assert [d.kind for d in DISTRIBUTIONS] == list(m.DISTRIBUTIONS)

MESSAGES = [
    m.Handshake(system_name="sluice"),
    m.HandshakeResult(system_name="pyprob_cpp", model_name="Galton board"),
    m.Run(),
    m.RunResult(result=np.arange(6.0).reshape(2, 3)),
    m.RunResult(),
    m.SampleResult(result=np.float64(-0.25)),
    m.Observe(address="calorimeter", name="E", distribution=DISTRIBUTIONS[0], value=[3.0, 4.5]),
    m.Observe(address="counts", distribution=DISTRIBUTIONS[3]),
    m.ObserveResult(),
    m.Tag(address="nail", name="final", value=np.array(17.0)),
    m.TagResult(),
    m.Reset(),
    m.Sample(address="σ → ∞", name="ünïcode", distribution=DISTRIBUTIONS[1], control=False),
] + [m.Sample(address=f"site{index}", distribution=distribution) for index, distribution in enumerate(DISTRIBUTIONS)]


def with_other_values(message, offset: float):
    """``message`` with every tensor value shifted by ``offset``: the same structure, other data."""
    def shifted(value):
        return None if value is None else value + offset

    changes = {}
    for name, kind in m.LAYOUTS[type(message)]:
        value = getattr(message, name)
        if kind == m.TENSOR:
            changes[name] = shifted(value)
        elif kind == m.DISTRIBUTION and isinstance(value, m.Distribution):
            changes[name] = m.Distribution(value.kind, **{key: shifted(v) for key, v in value.parameters.items()})
    return type(message)(**{**{name: getattr(message, name) for name, _ in m.LAYOUTS[type(message)]}, **changes})


@pytest.mark.parametrize("message", MESSAGES, ids=lambda message: f"{type(message).__name__}")
def test_every_message_survives_encode_then_decode(message):
    """decode(encode(message)) == message, and again for a message of the same structure with other values (the
    second goes through the cached buffer and the cached skeleton: they must not return the first's values)."""
    decoded = m.decode(m.encode(message))
    assert decoded == message
    other = with_other_values(message, 0.125)
    assert m.decode(m.encode(other)) == other
    assert m.decode(m.encode(message)) == message


def test_a_scalar_travels_with_an_empty_shape_and_a_tensor_with_its_own():
    """0-d stays 0-d and a 2 × 3 array stays 2 × 3 (row-major), so a C++ reader sees the shape the sender meant."""
    scalar = m.decode(m.encode(m.SampleResult(result=2.5))).result
    matrix = m.decode(m.encode(m.RunResult(result=np.arange(6.0).reshape(2, 3)))).result
    assert scalar.shape == () and float(scalar) == 2.5
    assert matrix.shape == (2, 3) and matrix[1, 0] == 3.0


def test_an_unknown_distribution_type_is_kept_and_refused_where_it_is_used():
    """A type code that the schema does not have (a newer simulator's) decodes as UnknownDistribution with its code
    (a message still in the protocol); scoring or drawing it is PPXUnknownDistributionError naming the code."""
    message = m.Sample(address="mystery", distribution=m.UnknownDistribution(42))
    decoded = m.decode(m.encode(message))
    assert decoded == message
    for use in (ppx_distributions.to_torch, ppx_distributions.value_shape,
                lambda d: ppx_distributions.sample(d, torch.Generator())):
        with pytest.raises(PPXUnknownDistributionError, match="distribution type 42"):
            use(decoded.distribution)


# --- flatc, the reference implementation of the schema ------------------------------------------------------

def expected_json(message) -> dict:
    """What flatc --json --strict-json prints for ``message`` (tensors as {data, shape}, unions as X_type + X)."""
    def tensor(value):
        value = np.asarray(value)
        return {"data": value.reshape(-1).tolist(), "shape": list(value.shape)}

    body = {}
    for name, kind in m.LAYOUTS[type(message)]:
        value = getattr(message, name)
        if kind == m.STRING:
            body[name] = value
        elif kind == m.TENSOR and value is not None:
            body[name] = tensor(value)
        elif kind == m.DISTRIBUTION and value is not None:
            body[f"{name}_type"] = value.kind
            body[name] = {key: tensor(v) for key, v in value.parameters.items()}
        elif kind == m.BOOL_TRUE and value is not True:
            body[name] = value
    return {"body_type": type(message).__name__, "body": body}


def normalised(document: dict) -> dict:
    """flatc leaves out empty tables and default values; drop them on both sides before comparing."""
    if isinstance(document, dict):
        return {key: normalised(value) for key, value in document.items() if value != {}}
    return document


@pytest.fixture(scope="module")
def flatc():
    if shutil.which("flatc") is None:
        pytest.skip("flatc is not installed (Debian: flatbuffers-compiler): the wire format is checked against it")
    return shutil.which("flatc")


def test_flatc_reads_what_sluice_writes(flatc, tmp_path):
    """flatc, given only ppx.fbs, turns each of sluice's buffers into the JSON of the same message: the union codes,
    the field slots, the file identifier and the tensor layout are the schema's."""
    messages = MESSAGES
    paths = []
    for index, message in enumerate(messages):
        path = tmp_path / f"message{index}.bin"
        path.write_bytes(m.encode(message))
        paths.append(path)
    completed = subprocess.run([flatc, "--json", "--strict-json", "--raw-binary", "-o", str(tmp_path), SCHEMA,
                                "--", *map(str, paths)], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    for message, path in zip(messages, paths, strict=True):
        read = json.loads(path.with_suffix(".json").read_text())
        assert normalised(read) == normalised(expected_json(message)), type(message).__name__


def test_sluice_reads_what_flatc_writes(flatc, tmp_path):
    """Buffers that flatc builds from JSON with ppx.fbs decode to the messages that JSON describes."""
    paths = []
    for index, message in enumerate(MESSAGES):
        path = tmp_path / f"message{index}.json"
        path.write_text(json.dumps(expected_json(message)))
        paths.append(path)
    completed = subprocess.run([flatc, "--binary", "-o", str(tmp_path), SCHEMA, *map(str, paths)],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    for message, path in zip(MESSAGES, paths, strict=True):
        assert m.decode(path.with_suffix(".bin").read_bytes()) == message, type(message).__name__


def test_the_schema_compiles_for_cpp(flatc, tmp_path):
    """The C++ examples run `flatc --cpp` on the shipped schema: it must compile, with the unions in PPX's order."""
    completed = subprocess.run([flatc, "--cpp", "-o", str(tmp_path), SCHEMA], capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode == 0, completed.stderr
    header = (tmp_path / "ppx_generated.h").read_text()
    assert "MessageBody_Reset = 11" in header and "Distribution_Weibull = 11" in header


# --- corrupt buffers ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("buffer", [b"", b"PPXF", b"this is not a PPX message", bytes(64),
                                    m.encode(m.Run())[:-3], m.encode(m.Run()).replace(b"PPXF", b"PPXG")],
                         ids=["empty", "short", "text", "zeros", "truncated", "identifier"])
def test_a_buffer_that_is_not_a_ppx_message_is_a_protocol_error(buffer):
    with pytest.raises(PPXProtocolError, match="malformed PPX message"):
        m.decode(buffer)


def test_a_tensor_whose_shape_does_not_hold_its_values_is_a_protocol_error(flatc, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"body_type": "SampleResult", "body": {"result": {"data": [1.0, 2.0], "shape": [3]}}}))
    subprocess.run([flatc, "--binary", "-o", str(tmp_path), SCHEMA, str(path)], check=True, timeout=60)
    with pytest.raises(PPXProtocolError, match=r"has shape \[3\] but 2 values"):
        m.decode(path.with_suffix(".bin").read_bytes())


VALID = [m.encode(message) for message in MESSAGES]


@settings(max_examples=300, deadline=None)  # a few microseconds each; no deadline on a loaded machine
@given(index=st.integers(0, len(VALID) - 1), flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                           min_size=1, max_size=4))
def test_a_corrupted_buffer_decodes_or_is_a_protocol_error_never_anything_else(index, flips):
    """Bytes changed anywhere in a valid message: decode returns a message or raises PPXProtocolError (no IndexError,
    struct.error, hang or read past the buffer), so that the controller can name the run."""
    buffer = bytearray(VALID[index])
    for position, value in flips:
        buffer[position % len(buffer)] = value
    try:
        decoded = m.decode(bytes(buffer))
    except PPXProtocolError:
        return
    assert type(decoded) in m.MESSAGE_TYPES


def test_a_distribution_with_a_misspelt_parameter_is_refused_when_built():
    with pytest.raises(ValueError, match="takes the parameters mean, stddev"):
        m.Distribution("Normal", mean=0.0, sigma=1.0)
    with pytest.raises(ValueError, match="unknown PPX distribution 'Cauchy'"):
        m.Distribution("Cauchy", loc=0.0, scale=1.0)


# --- distributions ------------------------------------------------------------------------------------------

def scipy_log_prob(distribution, value: np.ndarray) -> np.ndarray:
    """log p(value) of a PPX distribution from scipy.stats (or, for Categorical, log probs[k]), in the PPX
    parametrisation: Beta(α = concentration1, β = concentration0), Gamma and Exponential by rate, LogNormal by the
    log's loc and scale, Weibull(scale, concentration)."""
    p = distribution.parameters
    return {
        "Normal": lambda: stats.norm(loc=p["mean"], scale=p["stddev"]).logpdf(value),
        "Uniform": lambda: stats.uniform(loc=p["low"], scale=p["high"] - p["low"]).logpdf(value),
        "Categorical": lambda: np.log(np.take_along_axis(p["probs"], value.astype(int)[..., None], -1)[..., 0]),
        "Poisson": lambda: stats.poisson(mu=p["rate"]).logpmf(value),
        "Bernoulli": lambda: stats.bernoulli(p=p["probs"]).logpmf(value),
        "Beta": lambda: stats.beta(a=p["concentration1"], b=p["concentration0"]).logpdf(value),
        "Exponential": lambda: stats.expon(scale=1.0 / p["rate"]).logpdf(value),
        "Gamma": lambda: stats.gamma(a=p["concentration"], scale=1.0 / p["rate"]).logpdf(value),
        "LogNormal": lambda: stats.lognorm(s=p["scale"], scale=np.exp(p["loc"])).logpdf(value),
        "Binomial": lambda: stats.binom(n=p["total_count"], p=p["probs"]).logpmf(value),
        "Weibull": lambda: stats.weibull_min(c=p["concentration"], scale=p["scale"]).logpdf(value),
    }[distribution.kind]()


LOG_PROB_RTOL = 1e-12  # two float64 evaluations of the same formula, written differently: a few hundred ulps


@pytest.mark.parametrize("distribution", DISTRIBUTIONS, ids=lambda d: d.kind)
def test_log_prob_is_scipys_in_the_ppx_parametrisation(distribution):
    """The float64 log-density of each PPX distribution, at five draws from it, is scipy.stats' (an independent
    implementation) in the parametrisation the schema documents."""
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        value = ppx_distributions.sample(distribution, generator)
        log_prob = ppx_distributions.log_prob(distribution, value)
        assert log_prob.dtype == torch.float64
        expected = scipy_log_prob(distribution, value.numpy())
        np.testing.assert_allclose(log_prob.numpy(), expected, rtol=LOG_PROB_RTOL, atol=LOG_PROB_RTOL)


@pytest.mark.parametrize("kind, parameters, values, expected", [
    ("Bernoulli", dict(probs=0.0), [0.0, 1.0], [0.0, -math.inf]),
    ("Bernoulli", dict(probs=1.0), [0.0, 1.0], [-math.inf, 0.0]),
    ("Binomial", dict(total_count=5.0, probs=0.0), [0.0, 1.0, 5.0], [0.0, -math.inf, -math.inf]),
    ("Binomial", dict(total_count=5.0, probs=1.0), [5.0, 4.0, 0.0], [0.0, -math.inf, -math.inf]),
    ("Binomial", dict(total_count=5.0, probs=0.3), [-1.0, 6.0], [-math.inf, -math.inf]),
], ids=["bernoulli-0", "bernoulli-1", "binomial-0", "binomial-1", "binomial-outside"])
def test_probabilities_of_exactly_zero_and_one_are_scored_exactly(kind, parameters, values, expected):
    """At probs 0 or 1 a value is certain (log p = 0) or impossible (−∞), as is a count outside 0 … n: torch's own
    Bernoulli and Binomial clamp probs and would give an impossible value a finite log-probability. Alone and
    through log_prob_sums alike."""
    distribution = m.Distribution(kind, **parameters)
    assert ppx_distributions.log_prob(distribution, values).tolist() == expected
    sums = ppx_distributions.log_prob_sums([distribution] * len(values), [np.array(v) for v in values])
    assert sums.tolist() == expected


def test_a_pair_that_torch_cannot_score_is_a_distribution_error_naming_it():
    """A category index beyond the probs (a recorded category that does not exist at this θ) among pairs that score:
    PPXDistributionError with the index of the pair and the distribution, not torch's bare IndexError."""
    distributions = [m.Distribution("Categorical", probs=[0.5, 0.5]), m.Distribution("Categorical", probs=[0.5, 0.5]),
                     m.Distribution("Normal", mean=0.0, stddev=1.0)]
    with pytest.raises(PPXDistributionError, match=r"Distribution\('Categorical', probs=\[0.5, 0.5\]\)") as raised:
        ppx_distributions.log_prob_sums(distributions, [np.array(1.0), np.array(2.0), np.array(0.0)])
    assert raised.value.pair == 1


N_DRAWS = 20_000


@pytest.mark.parametrize("distribution", DISTRIBUTIONS, ids=lambda d: d.kind)
def test_draws_have_the_distributions_mean_and_variance(distribution):
    """N_DRAWS draws from the generator (as one draw of a distribution with N_DRAWS copies of the parameters):
    their mean and the mean of (x − μ)² match the distribution's mean and variance within 5 standard errors."""
    batch = ppx_distributions.value_shape(distribution)
    stacked = m.Distribution(distribution.kind, **{
        name: np.broadcast_to(value, (N_DRAWS,) + (value.shape if distribution.kind == "Categorical" else batch))
        for name, value in distribution.parameters.items()})
    draws = ppx_distributions.sample(stacked, torch.Generator().manual_seed(0))
    twin = ppx_distributions.to_torch(distribution)
    if distribution.kind == "Categorical":  # the mean and variance of the category's index
        index = torch.arange(twin.probs.shape[-1], dtype=torch.float64)
        mean = (twin.probs * index).sum(-1)
        variance = (twin.probs * index**2).sum(-1) - mean**2
    else:
        mean, variance = twin.mean, twin.variance
    flat = draws.reshape(N_DRAWS, -1)
    assert_mean_close(flat, mean.reshape(-1), f"{distribution.kind} draws")
    assert_mean_close((flat - mean.reshape(-1)) ** 2, variance.reshape(-1), f"{distribution.kind} squared deviations")


def test_draws_are_reproducible_from_the_generator():
    first = [ppx_distributions.sample(d, torch.Generator().manual_seed(5)) for d in DISTRIBUTIONS]
    second = [ppx_distributions.sample(d, torch.Generator().manual_seed(5)) for d in DISTRIBUTIONS]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_log_prob_sums_scores_many_pairs_as_one_by_one():
    """The grouped scoring of many (distribution, value) pairs of mixed kinds and shapes equals scoring each pair
    alone and summing over its elements (the stacking must broadcast each pair as it broadcast alone)."""
    generator = torch.Generator().manual_seed(2)
    pairs = [(d, ppx_distributions.sample(d, generator)) for d in DISTRIBUTIONS for _ in range(3)]
    grouped = ppx_distributions.log_prob_sums([d for d, _ in pairs], [v.numpy() for _, v in pairs])
    alone = torch.stack([ppx_distributions.log_prob(d, v).sum() for d, v in pairs])
    assert torch.allclose(grouped, alone, rtol=1e-15, atol=1e-12)
    assert math.isfinite(float(grouped.sum()))
