"""AugmentedData: construction checks, slicing, splitting, concatenation and the exact HDF5 round trip."""

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sluice
from sluice.data.augmented import FIELDS

AugmentedData = sluice.AugmentedData


def arrays(n=6, p=2, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return dict(theta0=rng.normal(size=(n, p)), theta1=rng.normal(size=(n, p)), y=np.arange(n) % 2,
                x=rng.normal(size=(n, d)), log_r_xz=rng.normal(size=n), t_xz0=rng.normal(size=(n, p)),
                t_xz1=rng.normal(size=(n, p)))


def assert_same(a: AugmentedData, b: AugmentedData):
    assert a.parameter_names == b.parameter_names and a.simulator_name == b.simulator_name
    for name in FIELDS:
        left, right = getattr(a, name), getattr(b, name)
        assert (left is None and right is None) or torch.equal(left, right), name


def test_built_from_numpy_arrays_with_derived_fields():
    data = AugmentedData(**arrays(), parameter_names=("a", "b"))
    assert len(data) == 6 and data.x.dtype == torch.float32
    assert torch.equal(data.theta[0], data.theta0[0]) and torch.equal(data.theta[1], data.theta1[1])
    assert torch.equal(data.t_xz[0], data.t_xz0[0]) and torch.equal(data.t_xz[1], data.t_xz1[1])
    assert data.parameter_names == ("a", "b")


def test_default_parameter_names():
    assert AugmentedData(**arrays(p=3)).parameter_names == ("theta_0", "theta_1", "theta_2")


@pytest.mark.parametrize("field, bad, message", [
    ("theta0", np.zeros(6), r"'theta0' must have shape \[n, p\]"),
    ("theta1", np.zeros((6, 3)), r"'theta1' must have shape \[6, 2\]"),
    ("y", np.zeros(5), r"'y' must have shape \[6\]"),
    ("y", np.full(6, 0.5), "'y' must hold only 0"),
    ("x", np.zeros(6), r"'x' must have shape \[n, d\].*x\[:, None\]"),
    ("x", np.zeros((5, 3)), r"'x' must have shape \[n, d\] .*with n = 6"),
    ("log_r_xz", np.zeros((6, 1)), r"'log_r_xz' must have shape \[6\]"),
    ("t_xz0", np.zeros((6, 1)), r"'t_xz0' must have shape \[6, 2\]"),
    ("t_xz1", np.array(["a"] * 6), "'t_xz1' must be numeric"),
    ("x", [[1.0, 2.0], [3.0]], "'x' cannot be read"),
])
def test_bad_arrays_raise_value_error_naming_the_field(field, bad, message):
    given_arrays = arrays()
    given_arrays[field] = bad
    with pytest.raises(ValueError, match=message):
        AugmentedData(**given_arrays)


@pytest.mark.parametrize("field", ["theta0", "theta1", "x", "log_r_xz", "t_xz0", "t_xz1"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_is_refused_with_field_and_row(field, value):
    given_arrays = arrays()
    given_arrays[field] = given_arrays[field].astype(float)
    given_arrays[field][3] = value
    with pytest.raises(ValueError, match=f"'{field}' has NaN or inf in 1 of 6 rows \\(first at row 3\\)"):
        AugmentedData(**given_arrays)


def test_missing_required_field_and_wrong_parameter_names():
    given_arrays = arrays()
    given_arrays["x"] = None
    with pytest.raises(ValueError, match="'x'.*required"):
        AugmentedData(**given_arrays)
    with pytest.raises(ValueError, match="parameter_names has 1 names but theta0 has 2 columns"):
        AugmentedData(**arrays(), parameter_names=("a",))


def test_slicing_by_int_slice_mask_and_indices():
    data = AugmentedData(**arrays(n=10))
    assert len(data[3]) == 1 and torch.equal(data[3].x[0], data.x[3])
    assert len(data[-1]) == 1 and torch.equal(data[-1].x[0], data.x[9])
    assert len(data[2:5]) == 3 and torch.equal(data[2:5].log_r_xz, data.log_r_xz[2:5])
    assert len(data[data.y == 1]) == 5
    picked = data[[7, 1]]
    assert torch.equal(picked.t_xz1, data.t_xz1[[7, 1]])


@pytest.mark.parametrize("index", [slice(None, None, -1), slice(8, 2, -2), [-1, 3, 3, 0], np.array([], int), -10,
                                   slice(20, 30)], ids=["reversed", "negative step", "repeats", "none", "first",
                                                        "past the end"])
def test_rows_are_selected_as_numpy_selects_them(index):
    given_arrays = arrays(n=10)
    given_arrays["x"] = np.arange(10.0)[:, None]  # row ids
    data = AugmentedData(**given_arrays)
    assert data[index].x[:, 0].tolist() == np.atleast_1d(np.arange(10)[index]).tolist()


def test_rows_out_of_range_or_of_no_integer_kind_are_refused_and_iteration_ends():
    data = AugmentedData(**arrays(n=10))
    for index in (10, -11, [0, 10], [0.5]):
        with pytest.raises(IndexError):
            data[index]
    assert [len(row) for row in data] == [1] * 10  # iteration stops at the IndexError after the last row


def test_fields_are_read_only():
    data = AugmentedData(**arrays())
    before = data.x.clone()
    with pytest.raises(AttributeError, match="'x' is read-only"):
        data.x = np.zeros((6, 3))
    assert torch.equal(data.x, before)


def test_split_is_a_reproducible_partition():
    given_arrays = arrays(n=400)
    given_arrays["x"] = np.arange(400.0)[:, None]  # row ids
    data = AugmentedData(**given_arrays)
    rest, held = data.split(0.25, seed=0)
    assert len(held) == 100 and len(rest) == 300
    ids = torch.cat([rest.x[:, 0], held.x[:, 0]]).sort().values
    assert torch.equal(ids, torch.arange(400.0))
    again_rest, again_held = data.split(0.25, seed=0)
    assert torch.equal(again_held.x, held.x)
    assert not torch.equal(data.split(0.25, seed=1)[1].x, held.x)
    for fraction in (0.0, 1.0, 1e-6):
        with pytest.raises(ValueError, match="split"):
            data.split(fraction)


def test_concatenate_keeps_order_and_refuses_mixed_parameters():
    first, second = AugmentedData(**arrays(seed=0)), AugmentedData(**arrays(seed=1))
    both = AugmentedData.concatenate([first, second])
    assert len(both) == 12 and torch.equal(both.x[6:], second.x)
    with pytest.raises(ValueError, match="different parameter names"):
        AugmentedData.concatenate([first, AugmentedData(**arrays(), parameter_names=("c", "d"))])


def test_hdf5_round_trip_is_exact(tmp_path):
    board = sluice.simulators.GaltonBoard()
    data = sluice.simulate(board, board.default_prior(), 1000, seed=0)
    data.save(tmp_path / "galton.h5")
    assert_same(AugmentedData.load(tmp_path / "galton.h5"), data)


def test_black_box_round_trip_keeps_missing_fields_missing(tmp_path):
    given_arrays = arrays()
    for name in ("log_r_xz", "t_xz0", "t_xz1"):
        given_arrays[name] = None
    data = AugmentedData(**given_arrays, simulator_name="mine")
    data.save(tmp_path / "bb.h5")
    assert_same(AugmentedData.load(tmp_path / "bb.h5"), data)


def test_save_never_overwrites_without_being_asked(tmp_path):
    path = tmp_path / "d.h5"
    first, second = AugmentedData(**arrays(seed=0)), AugmentedData(**arrays(seed=1))
    first.save(path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        second.save(path)
    assert_same(AugmentedData.load(path), first)
    second.save(path, overwrite=True)
    assert_same(AugmentedData.load(path), second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]  # no temporary files left behind


def test_missing_truncated_corrupt_and_foreign_files_get_clear_errors(tmp_path):
    data = AugmentedData(**arrays(n=2000))
    data.save(tmp_path / "good.h5")
    with pytest.raises(FileNotFoundError, match="no such data file"):
        AugmentedData.load(tmp_path / "absent.h5")
    whole = (tmp_path / "good.h5").read_bytes()
    (tmp_path / "truncated.h5").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        AugmentedData.load(tmp_path / "truncated.h5")
    (tmp_path / "noise.h5").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        AugmentedData.load(tmp_path / "noise.h5")
    with h5py.File(tmp_path / "foreign.h5", "w") as file:
        file.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ValueError, match="not sluice AugmentedData"):
        AugmentedData.load(tmp_path / "foreign.h5")
    with h5py.File(tmp_path / "good.h5", "a") as file:
        file.attrs["n"] = 3000
    with pytest.raises(ValueError, match="incomplete"):
        AugmentedData.load(tmp_path / "good.h5")


@st.composite
def augmented_arrays(draw):
    n = draw(st.integers(1, 12))
    p = draw(st.integers(1, 3))
    d = draw(st.integers(1, 4))
    floats = st.floats(-1e6, 1e6, allow_nan=False, width=32)

    def block(*shape):
        return np.array(draw(st.lists(floats, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))),
                        dtype=np.float32).reshape(shape)

    return dict(theta0=block(n, p), theta1=block(n, p), y=np.array(draw(st.lists(st.sampled_from([0, 1]),
                min_size=n, max_size=n))), x=block(n, d), log_r_xz=block(n), t_xz0=block(n, p), t_xz1=block(n, p))


@settings(max_examples=40, deadline=None)
@given(augmented_arrays(), st.sampled_from([None, "log_r_xz", "t_xz0"]))
def test_any_valid_arrays_round_trip_through_hdf5(tmp_path_factory, given_arrays, dropped_field):
    if dropped_field:
        given_arrays[dropped_field] = None
    data = AugmentedData(**given_arrays)
    path = tmp_path_factory.mktemp("prop") / "d.h5"
    data.save(path)
    loaded = AugmentedData.load(path)
    assert_same(loaded, data)
    for name, value in given_arrays.items():
        if value is not None:
            assert np.array_equal(getattr(loaded, name).numpy(), value.astype(np.float32))


@settings(max_examples=40, deadline=None)
@given(augmented_arrays(), st.sampled_from(["theta0", "theta1", "x", "log_r_xz", "t_xz0", "t_xz1"]),
       st.data())
def test_any_non_finite_entry_is_refused_by_name(given_arrays, field, choice):
    target = given_arrays[field].reshape(-1)
    target[choice.draw(st.integers(0, target.size - 1))] = choice.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    with pytest.raises(ValueError, match=f"'{field}' has NaN or inf"):
        AugmentedData(**given_arrays)
