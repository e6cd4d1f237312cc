"""check_simulator: a sound simulator passes every check, and each common mistake fails the check meant for it."""

import pytest

import sluice
from toys import (
    BlackBox,
    Exponential,
    GraphBreak,
    IgnoresTheta,
    LatentNotRecorded,
    NumpyExponential,
    RedrawsInScoring,
    UnrecordedNoise,
)


def report_for(simulator, **kwargs):
    return sluice.check_simulator(simulator, Exponential().default_prior(), **kwargs)


@pytest.mark.parametrize("simulator", [sluice.simulators.GaltonBoard(), sluice.simulators.GaussianMixture(),
                                       Exponential()], ids=lambda s: s.name)
def test_sound_simulators_pass_every_check(simulator):
    prior = simulator.default_prior()
    report = sluice.check_simulator(simulator, prior)
    assert report.ok, str(report)
    assert [r.name for r in report.results] == ["sampling", "re-scoring", "autograd score", "depends on θ",
                                                "E[t] = 0", "E[t²] = −E[∂t/∂θ]", "E[r] = 1"]
    assert "all checks passed" in str(report)


@pytest.mark.parametrize("simulator, failing", [
    (GraphBreak(), {"autograd score"}),
    (RedrawsInScoring(), {"re-scoring"}),
    (UnrecordedNoise(), {"E[t²] = −E[∂t/∂θ]"}),
    (LatentNotRecorded(), {"E[t²] = −E[∂t/∂θ]"}),
    (IgnoresTheta(), {"depends on θ"}),
], ids=lambda value: value.name if isinstance(value, sluice.Simulator) else "")
def test_each_mistake_fails_its_check_and_says_what_it_means(simulator, failing):
    report = report_for(simulator, n=4000)
    assert not report.ok
    assert {result.name for result in report.failures} >= failing
    text = str(report)
    assert "FAIL" in text and "usually means" in text


def test_graph_break_message_names_the_usual_causes():
    text = str(report_for(GraphBreak()))
    assert ".item()" in text and "drops terms" in text


def test_non_differentiable_simulator_is_noted_not_failed():
    report = report_for(NumpyExponential())
    assert report.ok
    assert report["autograd score"].passed is None and "finite differences" in report["autograd score"].detail


def test_black_box_simulator_is_reported_as_such():
    report = sluice.check_simulator(BlackBox(), sluice.priors.BoxUniform([-1.0], [1.0]))
    assert report.ok and "black-box" in report["joint_log_prob"].detail


def test_a_crashing_simulator_is_a_failed_check_not_a_crash():
    class Crashes(Exponential):
        def joint_log_prob(self, x, z, theta):
            raise KeyError("component")

    report = report_for(Crashes())
    assert not report.ok and "raised KeyError" in report["re-scoring"].detail
