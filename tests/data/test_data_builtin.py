"""The built-in datasets: scikit-learn's digits and the real MNIST files; seeded splits."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaekit.data import Dataset, load_dataset, split_indices
from vaekit.errors import ConfigError, DataError

MNIST_RAW_MD5 = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _examples(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """All examples and labels of ``ds`` in split order train, val, test."""
    xs = [ds.train, ds.val] + ([ds.test] if ds.test is not None else [])
    ys = [ds.train_labels, ds.val_labels] + ([ds.test_labels] if ds.test is not None else [])
    return np.concatenate(xs), np.concatenate(ys)


# --------------------------------------------------------------------------------------------
# digits


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def test_digits_shapes_levels_labels(digits: Dataset) -> None:
    assert digits.name == "digits" and digits.kind == "image"
    assert digits.shape == (1, 8, 8) and digits.levels == 17 and digits.dim == 64
    total = len(digits.train) + len(digits.val) + len(digits.test)
    assert total == 1797
    assert len(digits.test) == round(0.1 * 1797) == 180
    assert len(digits.val) == round(0.1 * (1797 - 180)) == 162
    for x, y in ((digits.train, digits.train_labels), (digits.val, digits.val_labels),
                 (digits.test, digits.test_labels)):
        assert x.dtype == np.uint8 and x.shape[1:] == (1, 8, 8)
        assert y is not None and y.dtype == np.int64 and y.shape == (len(x),)
    x, y = _examples(digits)
    assert x.min() == 0 and x.max() == 16
    assert set(np.unique(y)) == set(range(10))


def test_digits_splits_are_a_partition_of_the_original(digits: Dataset) -> None:
    from sklearn.datasets import load_digits

    original = load_digits().images.astype(np.uint8).reshape(1797, -1)
    x, y = _examples(digits)
    # every original example appears exactly once: compare sorted row multisets with labels attached
    ours = np.concatenate([x.reshape(1797, -1), y[:, None].astype(np.uint8)], axis=1)
    ref = np.concatenate([original, load_digits().target[:, None].astype(np.uint8)], axis=1)
    assert np.array_equal(ours[np.lexsort(ours.T)], ref[np.lexsort(ref.T)])


def test_digits_split_determinism(digits: Dataset) -> None:
    again = load_dataset("digits", seed=0)
    for a, b in ((digits.train, again.train), (digits.val, again.val), (digits.test, again.test)):
        assert np.array_equal(a, b)
    other = load_dataset("digits", seed=1)
    assert not np.array_equal(digits.test, other.test)
    assert len(other.test) == len(digits.test)


def test_digits_fractions_and_no_test_split() -> None:
    ds = load_dataset("digits", val_fraction=0.0, test_fraction=0.0)
    assert ds.test is None and ds.test_labels is None
    assert len(ds.val) == 0 and ds.val.shape == (0, 1, 8, 8) and len(ds.val_labels) == 0
    assert len(ds.train) == 1797
    ds = load_dataset("digits", val_fraction=0.5, test_fraction=0.25)
    assert len(ds.test) == round(0.25 * 1797)
    assert len(ds.val) == round(0.5 * (1797 - len(ds.test)))


# --------------------------------------------------------------------------------------------
# split_indices


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(3, 400),
    f1=st.floats(0, 0.999),
    f2=st.floats(0, 0.999),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_indices_is_a_partition(n: int, f1: float, f2: float, seed: int) -> None:
    test, val, train = split_indices(n, (f1, f2), seed)
    everything = np.concatenate([test, val, train])
    assert np.array_equal(np.sort(everything), np.arange(n))  # nothing dropped or duplicated
    assert len(train) >= 1
    if f1 > 0:
        assert len(test) >= 1
    if f2 > 0:
        assert len(val) >= 1
    for part in (test, val, train):
        assert np.all(np.diff(part) > 0)  # sorted, original order kept
    again = split_indices(n, (f1, f2), seed)
    assert all(np.array_equal(a, b) for a, b in zip(again, (test, val, train), strict=True))


def test_split_indices_sizes_follow_the_rounding_rule() -> None:
    test, val, train = split_indices(1000, (0.1, 0.2), 3)
    assert (len(test), len(val), len(train)) == (100, 180, 720)
    test, val, train = split_indices(3, (0.1, 0.1), 0)
    assert (len(test), len(val), len(train)) == (1, 1, 1)
    test, val, train = split_indices(3, (0.9, 0.9), 0)
    assert (len(test), len(val), len(train)) == (1, 1, 1)


def test_split_indices_refuses_tiny_datasets() -> None:
    with pytest.raises(DataError, match="need at least 3"):
        split_indices(2, (0.1,), 0, "tiny.npy")


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.1", True, None])
def test_bad_fractions_are_config_errors(bad: object) -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        load_dataset("digits", val_fraction=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="test_fraction"):
        load_dataset("digits", test_fraction=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, 1.5, "0"])
def test_bad_seed_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="seed"):
        load_dataset("digits", seed=bad)  # type: ignore[arg-type]


def test_options_that_do_not_apply_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset("digits", image_size=(4, 4))
    with pytest.raises(ConfigError, match="label_column"):
        load_dataset("digits", label_column=0)


def test_unknown_spec_lists_the_known_names(tmp_path: Path) -> None:
    spec = str(tmp_path / "no-such-thing")
    with pytest.raises(DataError) as info:
        load_dataset(spec)
    msg = str(info.value)
    assert spec in msg and "digits" in msg and "mnist" in msg and "fashion-mnist" in msg
    assert "\n" not in msg


def test_dataset_repr_is_short(digits: Dataset) -> None:
    text = repr(digits)
    assert "\n" not in text and "train=1455" in text


# --------------------------------------------------------------------------------------------
# MNIST (real files)


@pytest.fixture(scope="module")
def mnist(request: pytest.FixtureRequest) -> Dataset:
    folder = request.getfixturevalue("mnist_dir")
    return load_dataset("mnist", data_dir=folder)


def test_mnist_counts_shapes_levels(mnist: Dataset) -> None:
    assert mnist.kind == "image" and mnist.shape == (1, 28, 28) and mnist.levels == 256
    assert len(mnist.val) == 6000 and len(mnist.train) == 60000 - 6000 and len(mnist.test) == 10000
    for x in (mnist.train, mnist.val, mnist.test):
        assert x.dtype == np.uint8 and x.shape[1:] == (1, 28, 28)
        assert x.min() == 0 and x.max() == 255


def test_mnist_labels(mnist: Dataset, mnist_dir: Path) -> None:
    assert np.bincount(mnist.test_labels, minlength=10).tolist() == MNIST_TEST_LABEL_COUNTS
    raw = np.frombuffer(gzip.decompress((mnist_dir / "train-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8)
    together = np.bincount(mnist.train_labels, minlength=10) + np.bincount(mnist.val_labels, minlength=10)
    assert together.tolist() == np.bincount(raw, minlength=10).tolist()
    assert mnist.train_labels.dtype == np.int64


def test_mnist_validation_split_is_seeded(mnist: Dataset, mnist_dir: Path) -> None:
    again = load_dataset("mnist", data_dir=mnist_dir, val_fraction=0.1, seed=0)
    assert np.array_equal(again.val_labels, mnist.val_labels)
    assert np.array_equal(again.val, mnist.val)
    other = load_dataset("mnist", data_dir=mnist_dir, val_fraction=0.2, seed=5, test_fraction=0.5)
    assert len(other.val) == 12000 and len(other.test) == 10000  # own test split ignores test_fraction


@pytest.mark.parametrize("fname", sorted(MNIST_RAW_MD5))
def test_mnist_uncompressed_md5(mnist_dir: Path, fname: str) -> None:
    digest = hashlib.md5(gzip.decompress((mnist_dir / fname).read_bytes())).hexdigest()
    assert digest == MNIST_RAW_MD5[fname]


def test_mnist_raw_files_are_accepted(mnist_dir: Path, tmp_path: Path) -> None:
    for fname in MNIST_RAW_MD5:
        name = "t10k-labels-idx1-ubyte" if fname.startswith("t10k-labels") else None
        if name:  # one raw file, the rest as symlinks to the .gz originals
            (tmp_path / name).write_bytes(gzip.decompress((mnist_dir / fname).read_bytes()))
        else:
            (tmp_path / fname).symlink_to(mnist_dir / fname)
    ds = load_dataset("mnist", data_dir=tmp_path, val_fraction=0.5)
    assert np.bincount(ds.test_labels, minlength=10).tolist() == MNIST_TEST_LABEL_COUNTS


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_missing_files_name_the_file_and_the_download_option(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(name, data_dir=tmp_path)
    msg = str(info.value)
    assert "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert "download=True" in msg and str(tmp_path) in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []


def test_missing_one_file_names_only_that_file(mnist_dir: Path, tmp_path: Path) -> None:
    for fname in MNIST_RAW_MD5:
        if not fname.startswith("train-labels"):
            (tmp_path / fname).symlink_to(mnist_dir / fname)
    with pytest.raises(DataError, match=r"missing train-labels-idx1-ubyte\[\.gz\] in") as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert "t10k" not in str(info.value)


def test_default_data_dir_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAEKIT_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=str(tmp_path / "fashion-mnist")):
        load_dataset("Fashion-MNIST")


def test_mismatched_label_count_is_a_data_error(mnist_dir: Path, tmp_path: Path) -> None:
    for fname in MNIST_RAW_MD5:
        if not fname.startswith("t10k-labels"):
            (tmp_path / fname).symlink_to(mnist_dir / fname)
    header = bytes([0, 0, 8, 1]) + (9999).to_bytes(4, "big")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(header + bytes(9999))
    with pytest.raises(DataError, match="9999 labels for 10000 images"):
        load_dataset("mnist", data_dir=tmp_path)
