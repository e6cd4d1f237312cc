"""Generator files in: a Les Houches event file and a ROOT ntuple written here (from the particle toy's events and
weights) read back as the WeightedEvents built from the same numbers; missing weights and branches are named."""

import math

import numpy as np
import pytest
import torch
from sluice.weighted_events import WeightedEvents

from sluice.data.generator_files import read_lhe, read_root
from sluice.simulators.particle_toy import ParticleToy

pytest.importorskip("pylhe", reason="reading LHE files needs pylhe (the 'hep' extra)")
uproot = pytest.importorskip("uproot", reason="reading ROOT files needs uproot (the 'hep' extra)")

SM = torch.zeros(2)
BASIS_NAMES = ["sm", "c1_p1", "c1_m1", "c2_p1", "c2_m1", "c1_c2"]


@pytest.fixture(scope="module")
def toy_events():
    """200 toy events x (smeared (E, cos)) with partons z, their weights at the basis points and ±1σ normalisation
    and energy-scale variations."""
    toy = ParticleToy()
    x, z = toy.sample(SM.expand(200, 2), generator=torch.Generator().manual_seed(0))
    morphing = toy.morphing()
    weights = toy.event_weights(z["parton"], morphing.basis_points, generated_at=SM)
    variations = toy.systematic_weights(x, z["parton"], weights[:, 0])
    return toy, x.double(), z["parton"], weights, variations, morphing


def particle_line(pdg: int, status: int, px: float, py: float, pz: float, e: float) -> str:
    return f"{pdg} {status} 0 0 0 0 {px:.17e} {py:.17e} {pz:.17e} {e:.17e} 0.0 0.0 9.0"


def write_lhe(path, x, named_weights: dict, nominal) -> None:
    """An LHE file (version 3) of 2 → 2 events whose outgoing particle has energy x_E and cos θ = x_cos; each
    event's weights in <rwgt> under the names of ``named_weights`` ({name: [n]}), XWGTUP = ``nominal``."""
    lines = ['<LesHouchesEvents version="3.0">', "<header>", "<initrwgt>", '<weightgroup name="sluice">']
    lines += [f'<weight id="{name}">{name}</weight>' for name in named_weights]
    lines += ["</weightgroup>", "</initrwgt>", "</header>", "<init>",
              "2212 2212 6.5e+03 6.5e+03 0 0 247000 247000 -4 1", "3.0e+00 1.0e-02 3.0e+00 1", "</init>"]
    for i, (energy, cos) in enumerate(x.tolist()):
        sin = math.sqrt(max(0.0, 1.0 - cos * cos))
        lines += ["<event>", f"4 1 {float(nominal[i]):.17e} 9.1e+01 7.5e-03 1.3e-01",
                  particle_line(21, -1, 0.0, 0.0, energy, energy), particle_line(21, -1, 0.0, 0.0, -energy, energy),
                  particle_line(11, 1, energy * sin, 0.0, energy * cos, energy),
                  particle_line(-11, 1, -energy * sin, 0.0, -energy * cos, energy), "<rwgt>"]
        lines += [f'<wgt id="{name}"> {float(values[i]):.17e} </wgt>' for name, values in named_weights.items()]
        lines += ["</rwgt>", "</event>"]
    lines.append("</LesHouchesEvents>")
    path.write_text("\n".join(lines) + "\n")


def energy_and_angle(event) -> tuple[float, float]:
    """x = (E, cos θ) of the first outgoing particle."""
    particle = next(p for p in event.particles if int(p.status) == 1)
    return float(particle.e), float(particle.pz) / float(particle.e)


def test_lhe_file_reads_back_as_the_weighted_events(tmp_path, toy_events):
    toy, x, _, weights, variations, morphing = toy_events
    n = len(x)
    named = {name: weights[:, b] * n for b, name in enumerate(BASIS_NAMES)}  # "average" norm: each weight ≈ σ
    named |= {f"{nuisance}_{side}": variations[nuisance][k] * n for nuisance in variations
              for k, side in enumerate(("down", "up"))}
    path = tmp_path / "events.lhe"
    write_lhe(path, x, named, nominal=named["sm"])
    variation_names = {nuisance: (f"{nuisance}_down", f"{nuisance}_up") for nuisance in variations}
    events = read_lhe(path, morphing, [None] + BASIS_NAMES[1:], energy_and_angle, nuisances=toy.nuisances(),
                      variations=variation_names)
    expected = WeightedEvents(x, weights, morphing, nuisances=toy.nuisances(), variations=variations)
    torch.testing.assert_close(events.x, expected.x, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(events.basis_weights, expected.basis_weights, rtol=1e-14, atol=0)
    theta = torch.tensor([0.3, -0.4, 0.5, -0.8], dtype=torch.float64)
    torch.testing.assert_close(events.weights(theta), expected.weights(theta), rtol=1e-12, atol=0)
    torch.testing.assert_close(events.cross_section(theta), expected.cross_section(theta), rtol=1e-12, atol=0)
    assert len(read_lhe(path, morphing, BASIS_NAMES, energy_and_angle, max_events=50)) == 50


def test_lhe_file_without_a_named_weight_is_named(tmp_path, toy_events):
    _, x, _, weights, _, morphing = toy_events
    path = tmp_path / "events.lhe"
    write_lhe(path, x[:5], {name: weights[:5, b] for b, name in enumerate(BASIS_NAMES[:5])}, nominal=weights[:5, 0])
    with pytest.raises(ValueError, match="event 0 of .* has no weight named 'c1_c2'"):
        read_lhe(path, morphing, BASIS_NAMES, energy_and_angle, event_norm="sum")
    with pytest.raises(ValueError, match="one weight name per basis point"):
        read_lhe(path, morphing, BASIS_NAMES[:5], energy_and_angle)
    with pytest.raises(ValueError, match="event_norm"):
        read_lhe(path, morphing, BASIS_NAMES, energy_and_angle, event_norm="mean")


def test_root_ntuple_reads_back_as_the_weighted_events(tmp_path, toy_events):
    toy, x, z, weights, variations, morphing = toy_events
    path = tmp_path / "events.root"
    branches = {"E": x[:, 0].numpy(), "cos": x[:, 1].numpy()}
    branches |= {f"w_{name}": weights[:, b].numpy() for b, name in enumerate(BASIS_NAMES)}
    branches |= {f"w_norm_{side}": variations["normalisation"][k].numpy() for k, side in enumerate(("down", "up"))}
    per_basis = toy.systematic_weights(x, z, weights)["energy_scale"]  # [n, B] variations, one branch per point
    branches |= {f"w_scale_{side}_{name}": per_basis[k][:, b].numpy() for k, side in enumerate(("down", "up"))
                 for b, name in enumerate(BASIS_NAMES)}
    with uproot.recreate(path) as file:
        file["events"] = {name: np.ascontiguousarray(values) for name, values in branches.items()}
    scale_names = {side: [f"w_scale_{side}_{name}" for name in BASIS_NAMES] for side in ("down", "up")}
    variation_branches = {"normalisation": ("w_norm_down", "w_norm_up"),
                          "energy_scale": (scale_names["down"], scale_names["up"])}
    events = read_root(path, "events", ["E", "cos"], [f"w_{name}" for name in BASIS_NAMES], morphing,
                       nuisances=toy.nuisances(), variations=variation_branches)
    expected = WeightedEvents(x, weights, morphing, nuisances=toy.nuisances(),
                              variations={"normalisation": variations["normalisation"], "energy_scale": per_basis})
    assert torch.equal(events.x, expected.x)
    theta = torch.tensor([-0.6, 0.2, -1.2, 0.7], dtype=torch.float64)
    torch.testing.assert_close(events.joint_log_ratio(theta, torch.zeros(4)),
                               expected.joint_log_ratio(theta, torch.zeros(4)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="has no branch 'pT'"):
        read_root(path, "events", ["E", "pT"], [f"w_{name}" for name in BASIS_NAMES], morphing)
    with pytest.raises(ValueError, match="has no tree 'Delphes'"):
        read_root(path, "Delphes", ["E"], [f"w_{name}" for name in BASIS_NAMES], morphing)
