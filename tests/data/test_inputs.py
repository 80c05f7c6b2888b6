"""vaekit.data.inputs.as_examples: tensors, arrays, torch Datasets and DataLoaders as model inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from vaekit.data import Dataset as VaekitDataset
from vaekit.data import as_examples
from vaekit.data.inputs import _READ_BATCH
from vaekit.data.stream import NpyStream
from vaekit.errors import ConfigError, DataError, ShapeError


def _rows(n: int = 20, shape: tuple[int, ...] = (1, 4, 4)) -> torch.Tensor:
    """n distinct float32 examples; example i starts with the value i (so rows can be matched)."""
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(0))
    x.view(n, -1)[:, 0] = torch.arange(n, dtype=torch.float32)
    return x


def _sorted_rows(x: torch.Tensor) -> torch.Tensor:
    return x[torch.argsort(x.reshape(x.shape[0], -1)[:, 0])]


def _message(excinfo: pytest.ExceptionInfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, f"message is not one line: {text!r}"
    return text


class _ListDataset(Dataset):
    """A map-style Dataset over a list of items (anything)."""

    def __init__(self, items):
        self.items = list(items)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class _Stream(IterableDataset):
    def __init__(self, items):
        self.items = list(items)

    def __iter__(self):
        return iter(self.items)


# --------------------------------------------------------------------------------------------
# accepted kinds


def test_float_tensor_is_returned_without_a_copy():
    x = _rows()
    out = as_examples(x, name="train_x", data_shape=(1, 4, 4))
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert out.data_ptr() == x.data_ptr()


def test_float64_tensor_keeps_its_dtype_and_integer_tensor_becomes_float32():
    x = torch.rand(5, 3, dtype=torch.float64)
    out = as_examples(x, name="train_x")
    assert out.dtype == torch.float64 and torch.equal(out, x)
    ints = torch.arange(12).reshape(4, 3)
    out = as_examples(ints, name="train_x")
    assert out.dtype == torch.float32 and torch.equal(out, ints.float())


def test_tensor_requiring_grad_is_detached():
    x = torch.rand(4, 3, requires_grad=True)
    out = as_examples(x, name="train_x")
    assert not out.requires_grad and torch.equal(out, x.detach())


def test_float64_numpy_array():
    a = np.random.default_rng(0).normal(size=(6, 2, 3))
    out = as_examples(a, name="train_x", data_shape=(2, 3))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.shape == (6, 2, 3)
    np.testing.assert_array_equal(out.numpy(), a)


def test_uint8_numpy_array_becomes_float32():
    a = np.random.default_rng(0).integers(0, 256, size=(7, 1, 5, 5), dtype=np.uint8)
    out = as_examples(a, name="train_x")
    assert out.dtype == torch.float32 and out.shape == (7, 1, 5, 5)
    np.testing.assert_array_equal(out.numpy(), a.astype(np.float32))


def test_read_only_and_reversed_arrays_are_copied_without_a_warning():
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    a.flags.writeable = False
    out = as_examples(a, name="train_x")                # torch would warn on a non-writable array
    np.testing.assert_array_equal(out.numpy(), a)
    out = as_examples(a[::-1], name="train_x")          # negative strides
    np.testing.assert_array_equal(out.numpy(), a[::-1])


def test_tensor_dataset_with_labels():
    x = _rows(2 * _READ_BATCH + 37)                     # several read batches, the last one partial
    y = torch.arange(x.shape[0]) % 10
    out = as_examples(TensorDataset(x, y), name="train_x", data_shape=(1, 4, 4))
    assert out.dtype == torch.float32 and torch.equal(out, x)


def test_custom_dataset_of_dicts_ignores_the_other_keys():
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, size=(3, 2), dtype=np.uint8) for _ in range(9)]
    data = _ListDataset({"x": a, "label": f"class {i}", "meta": None} for i, a in enumerate(arrays))
    out = as_examples(data, name="val_x")
    assert out.dtype == torch.float32 and out.shape == (9, 3, 2)
    np.testing.assert_array_equal(out.numpy(), np.stack(arrays).astype(np.float32))


def test_dataset_of_lists_takes_the_first_element():
    data = _ListDataset([[torch.full((2,), float(i)), "label"] for i in range(4)])
    out = as_examples(data, name="train_x")
    assert torch.equal(out, torch.arange(4.0)[:, None].expand(4, 2))


def test_shuffled_dataloader_gives_the_same_rows():
    x = _rows(50)
    loader = DataLoader(TensorDataset(x, torch.zeros(50)), batch_size=8, shuffle=True,
                        generator=torch.Generator().manual_seed(3))
    out = as_examples(loader, name="train_x", data_shape=(1, 4, 4))
    assert out.shape == x.shape
    assert not torch.equal(out, x)                      # it was shuffled ...
    assert torch.equal(_sorted_rows(out), x)            # ... but holds the same rows


def test_dataloader_of_dict_batches():
    x = _rows(10)
    loader = DataLoader(_ListDataset({"x": x[i], "y": i} for i in range(10)), batch_size=4)
    assert torch.equal(as_examples(loader, name="train_x"), x)


def test_dataloader_with_numpy_batches_from_a_custom_collate():
    a = np.arange(24, dtype=np.uint8).reshape(8, 3)
    loader = DataLoader(_ListDataset(a), batch_size=3, collate_fn=lambda items: (np.stack(items), None))
    out = as_examples(loader, name="train_x")
    assert out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), a.astype(np.float32))


def test_iterable_dataset_is_read_once():
    x = _rows(_READ_BATCH + 5, shape=(3,))
    out = as_examples(_Stream((x[i], i) for i in range(x.shape[0])), name="train_x", data_shape=(3,))
    assert torch.equal(out, x)


def test_npy_stream_is_passed_through(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((10, 4, 5), dtype=np.uint8))
    stream = NpyStream(path)
    try:
        assert as_examples(stream, name="train_x") is stream
        assert as_examples(stream, name="train_x", data_shape=(1, 4, 5)) is stream
        with pytest.raises(ShapeError) as excinfo:
            as_examples(stream, name="train_x", data_shape=(20,))
        text = _message(excinfo)
        assert text.startswith("train_x: ") and "(1, 4, 5)" in text and "(20,)" in text
    finally:
        stream.close()


# --------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("data, found", [("x.npy", "str"), ([[1.0, 2.0]], "list"), (None, "NoneType")])
def test_wrong_type(data, found):
    with pytest.raises(ConfigError) as excinfo:
        as_examples(data, name="val_x")
    assert _message(excinfo) == f"val_x: expected a tensor, numpy array, torch Dataset or DataLoader, got {found}"


def test_wrong_type_names_the_module_of_a_non_builtin_class():
    # vaekit.data.Dataset is the train/val/test bundle, not a torch Dataset
    with pytest.raises(ConfigError) as excinfo:
        as_examples(VaekitDataset.__new__(VaekitDataset), name="train_x")
    assert "got vaekit.data.dataset.Dataset" in _message(excinfo)


@pytest.mark.parametrize("data, problem", [
    (TensorDataset(torch.zeros(0, 3)), "the Dataset is empty"),
    (_Stream([]), "the Dataset is empty"),
    (DataLoader(TensorDataset(torch.zeros(0, 3)), batch_size=4), "the DataLoader yielded no examples"),
    (torch.zeros(0, 3), "the tensor holds no examples (shape (0, 3))"),
    (np.zeros((0, 2, 2)), "the array holds no examples (shape (0, 2, 2))"),
])
def test_empty(data, problem):
    with pytest.raises(DataError) as excinfo:
        as_examples(data, name="train_x")
    assert _message(excinfo) == f"train_x: {problem}"


def test_ragged_dataloader_batches():
    batches = [torch.zeros(8, 1, 8, 8), torch.zeros(8, 1, 8, 8), torch.zeros(8, 3)]
    loader = DataLoader(_ListDataset(batches), batch_size=None)   # each item is a whole batch
    with pytest.raises(ShapeError) as excinfo:
        as_examples(loader, name="train_x")
    assert _message(excinfo) == ("train_x: a DataLoader yielded a batch of shape (8, 3) "
                                 "after batches of shape (*, 1, 8, 8)")


def test_ragged_dataset_items_name_the_example():
    items = [np.zeros(3, dtype=np.float32)] * 5 + [np.zeros(4, dtype=np.float32)] + [np.zeros(3)] * 3
    with pytest.raises(ShapeError) as excinfo:
        as_examples(_ListDataset(items), name="train_x")
    assert _message(excinfo) == "train_x: example 5 of the Dataset has shape (4,), after examples of shape (3,)"


def test_ragged_across_read_batches():
    items = [torch.zeros(2)] * (_READ_BATCH + 3) + [torch.zeros(2, 1)]
    with pytest.raises(ShapeError) as excinfo:
        as_examples(_Stream(items), name="train_x")
    assert f"example {_READ_BATCH + 3} " in _message(excinfo)


@pytest.mark.parametrize("make", [
    lambda x: x,
    lambda x: x.numpy(),
    lambda x: TensorDataset(x),
    lambda x: DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=3),
], ids=["tensor", "array", "dataset", "dataloader"])
def test_data_shape_mismatch_names_both_shapes(make):
    flat = torch.rand(6, 64)                                       # (N, prod(data_shape)) is not reshaped
    with pytest.raises(ShapeError) as excinfo:
        as_examples(make(flat), name="train_x", data_shape=(1, 8, 8))
    text = _message(excinfo)
    assert text.startswith("train_x: examples have shape (64,), expected data_shape (1, 8, 8)")


def test_examples_need_a_dimension():
    with pytest.raises(ShapeError) as excinfo:
        as_examples(torch.zeros(5), name="train_x")
    assert _message(excinfo).startswith("train_x: expected a tensor of shape (N, *data_shape)")
    with pytest.raises(ShapeError) as excinfo:
        as_examples(_ListDataset([1.0, 2.0]), name="train_x")
    assert _message(excinfo).startswith("train_x: example 0 is a scalar")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_name_the_first_example(value):
    x = torch.rand(10, 2, 3)
    x[3, 1, 2] = value
    x[7, 0, 0] = value
    for data in (x, x.double().numpy(), TensorDataset(x), DataLoader(TensorDataset(x), batch_size=4)):
        with pytest.raises(DataError) as excinfo:
            as_examples(data, name="train_x")
        assert _message(excinfo) == "train_x: contains NaN or infinite values (first at example 3)"


@pytest.mark.parametrize("array", [
    np.array([[1, "a"], [2, None]], dtype=object),
    np.array([["a", "b"], ["c", "d"]]),
], ids=["object", "str"])
def test_non_numeric_numpy_dtypes(array):
    with pytest.raises(DataError) as excinfo:
        as_examples(array, name="train_x")
    text = _message(excinfo)
    assert text.startswith("train_x: the array holds ") and str(array.dtype) in text and "expected numbers" in text


def test_non_numeric_items_in_a_dataset():
    items = [np.zeros(2)] * 3 + [np.array(["a", "b"], dtype=object)]
    with pytest.raises(DataError) as excinfo:
        as_examples(_ListDataset(items), name="val_x")
    assert _message(excinfo).startswith("val_x: example 3 holds object values")
    with pytest.raises(DataError) as excinfo:
        as_examples(_ListDataset(["some text"]), name="val_x")
    assert _message(excinfo) == "val_x: example 0 is a str, expected a tensor or numpy array"


def test_dict_items_without_x():
    with pytest.raises(DataError) as excinfo:
        as_examples(_ListDataset([{"image": torch.zeros(2), "label": 1}]), name="train_x")
    text = _message(excinfo)
    assert text.startswith("train_x: the Dataset's item 0 is a dict without key 'x'") and "'image'" in text


def test_complex_values():
    with pytest.raises(DataError) as excinfo:
        as_examples(torch.zeros(3, 2, dtype=torch.complex64), name="train_x")
    assert _message(excinfo).startswith("train_x: the tensor holds complex values")


@pytest.mark.parametrize("bad", [(), (0, 3), (2.5,), "abc", 3])
def test_malformed_data_shape(bad):
    with pytest.raises(ConfigError) as excinfo:
        as_examples(torch.zeros(2, 3), name="train_x", data_shape=bad)
    assert _message(excinfo).startswith("data_shape: expected a non-empty tuple of positive integers")
