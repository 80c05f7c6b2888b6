"""Every file format load_dataset reads, and every malformed input it must refuse with DataError."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaekit.data import Dataset, load_dataset
from vaekit.data.formats import read_idx, write_idx
from vaekit.errors import ConfigError, DataError


def _examples(ds: Dataset) -> tuple[np.ndarray, np.ndarray | None]:
    """All examples (and labels, if any) of ``ds`` in split order train, val, test."""
    xs = [ds.train, ds.val] + ([ds.test] if ds.test is not None else [])
    ys = [ds.train_labels, ds.val_labels] + ([ds.test_labels] if ds.test is not None else [])
    return np.concatenate(xs), (None if ys[0] is None else np.concatenate(ys))


def _sorted_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (flattened per example) in lexicographic order, to compare multisets."""
    flat = x.reshape(len(x), -1)
    return flat[np.lexsort(flat.T[::-1])]


def _same_examples(ds: Dataset, original: np.ndarray) -> bool:
    """Whether the splits of ``ds`` hold exactly the examples of ``original`` (as a multiset)."""
    x, _ = _examples(ds)
    return x.shape == original.shape and np.array_equal(_sorted_rows(x), _sorted_rows(original))


def _data_error(spec: Path | str, **kwargs: object) -> str:
    """Load ``spec``, expect a one-line DataError naming it, and return the message."""
    with pytest.raises(DataError) as info:
        load_dataset(str(spec), **kwargs)  # type: ignore[arg-type]
    msg = str(info.value)
    assert "\n" not in msg
    assert str(spec) in msg, msg
    return msg


def _ids_image(n: int, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 images whose first pixel is the example's index (unique for n <= 256)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    x.reshape(n, -1)[:, 0] = np.arange(n)
    return x


# --------------------------------------------------------------------------------------------
# numpy files


def test_npy_2d_is_tabular(tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(50, 7))
    x[:, 0] = np.arange(50)
    np.save(tmp_path / "t.npy", x)
    ds = load_dataset(tmp_path / "t.npy")
    assert ds.name == str(tmp_path / "t.npy")
    assert ds.kind == "tabular" and ds.shape == (7,) and ds.levels is None
    assert ds.train.dtype == np.float32 and ds.train_labels is None and ds.test_labels is None
    assert (len(ds.train), len(ds.val), len(ds.test)) == (41, 4, 5)  # round(4.5) == 4
    assert _same_examples(ds, x.astype(np.float32))


def test_npy_3d_uint8_is_a_grayscale_image(tmp_path: Path) -> None:
    x = _ids_image(30, (5, 6))
    np.save(tmp_path / "g.npy", x)
    ds = load_dataset(tmp_path / "g.npy")
    assert ds.kind == "image" and ds.shape == (1, 5, 6) and ds.levels == 256
    assert ds.train.dtype == np.uint8
    assert _same_examples(ds, x[:, None])


def test_npy_4d_channels_first_and_last(tmp_path: Path) -> None:
    x = _ids_image(20, (3, 6, 5))
    np.save(tmp_path / "nchw.npy", x)
    np.save(tmp_path / "nhwc.npy", np.transpose(x, (0, 2, 3, 1)))
    a = load_dataset(tmp_path / "nchw.npy")
    b = load_dataset(tmp_path / "nhwc.npy")
    assert a.shape == b.shape == (3, 6, 5) and a.levels == b.levels == 256
    for u, v in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert np.array_equal(u, v)
    assert _same_examples(a, x)


def test_npy_float_images_and_bool_images(tmp_path: Path) -> None:
    x = np.random.default_rng(2).random((10, 4, 4))
    np.save(tmp_path / "f.npy", x)
    ds = load_dataset(tmp_path / "f.npy")
    assert ds.kind == "image" and ds.shape == (1, 4, 4) and ds.levels is None
    assert ds.train.dtype == np.float32
    np.save(tmp_path / "b.npy", x > 0.5)
    ds = load_dataset(tmp_path / "b.npy")
    assert ds.levels == 2 and ds.train.dtype == np.uint8 and ds.train.max() <= 1


def test_npy_integer_images_within_255_become_uint8(tmp_path: Path) -> None:
    x = _ids_image(10, (3, 3)).astype(np.int32)
    np.save(tmp_path / "i.npy", x)
    ds = load_dataset(tmp_path / "i.npy")
    assert ds.train.dtype == np.uint8 and ds.levels == 256


def test_npz_keys_and_labels(tmp_path: Path) -> None:
    x = _ids_image(40, (4, 4))
    y = np.arange(40) % 3
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    ds = load_dataset(tmp_path / "xy.npz")
    assert ds.shape == (1, 4, 4)
    xs, ys = _examples(ds)
    assert ys is not None and ys.dtype == np.int64
    # the label travels with its example: example i has first pixel i and label i % 3
    assert np.array_equal(ys, xs.reshape(40, -1)[:, 0].astype(np.int64) % 3)

    np.savez(tmp_path / "data.npz", data=np.ones((5, 3)), labels=np.arange(5.0))
    ds = load_dataset(tmp_path / "data.npz")
    assert ds.kind == "tabular" and ds.train_labels is not None
    np.savez(tmp_path / "pos.npz", np.zeros((6, 2)))
    assert load_dataset(tmp_path / "pos.npz").shape == (2,)


def test_npz_without_data_key(tmp_path: Path) -> None:
    np.savez(tmp_path / "k.npz", images=np.zeros((5, 3)))
    assert "images" in _data_error(tmp_path / "k.npz")


def test_npz_labels_of_wrong_length_or_kind(tmp_path: Path) -> None:
    np.savez(tmp_path / "n.npz", x=np.zeros((5, 3)), y=np.arange(4))
    assert "labels have shape (4,)" in _data_error(tmp_path / "n.npz")
    np.savez(tmp_path / "f.npz", x=np.zeros((5, 3)), y=np.array([0, 1, 2, 3, 4.5]))
    assert "integers" in _data_error(tmp_path / "f.npz")


# --------------------------------------------------------------------------------------------
# CSV


def test_csv_without_header(tmp_path: Path) -> None:
    x = np.round(np.random.default_rng(3).normal(size=(20, 4)), 3)
    x[:, 0] = np.arange(20)
    np.savetxt(tmp_path / "a.csv", x, delimiter=",")
    ds = load_dataset(tmp_path / "a.csv")
    assert ds.kind == "tabular" and ds.shape == (4,) and ds.train_labels is None
    assert _same_examples(ds, x.astype(np.float32))


def test_csv_with_header_and_label_column(tmp_path: Path) -> None:
    rows = ["a,label,b"] + [f"{i},{i % 2},{i * 0.5}" for i in range(12)]
    (tmp_path / "h.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset(tmp_path / "h.csv")
    assert ds.shape == (3,) and ds.train_labels is None
    for column in ("label", 1, -2, "1"):
        ds = load_dataset(tmp_path / "h.csv", label_column=column)
        assert ds.shape == (2,)
        xs, ys = _examples(ds)
        assert np.array_equal(ys, xs[:, 0].astype(np.int64) % 2)
        assert np.allclose(xs[:, 1], xs[:, 0] * 0.5)


def test_csv_blank_lines_and_bom_are_tolerated(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text("\ufeffx,y\n1,2\n\n3,4\n5,6\n", encoding="utf-8")
    ds = load_dataset(tmp_path / "b.csv", val_fraction=0.0, test_fraction=0.0)
    assert ds.train.tolist() == [[1, 2], [3, 4], [5, 6]]


def test_csv_label_column_errors(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("a,b\n1,2\n3,4\n5,6\n")
    with pytest.raises(ConfigError, match="no column named 'c'"):
        load_dataset(tmp_path / "h.csv", label_column="c")
    with pytest.raises(ConfigError, match="out of range"):
        load_dataset(tmp_path / "h.csv", label_column=5)
    (tmp_path / "f.csv").write_text("1,2\n3,4.5\n5,6\n")
    assert "row 2, label column 2 has non-integer value 4.5" in _data_error(tmp_path / "f.csv", label_column=1)
    np.save(tmp_path / "x.npy", np.zeros((5, 2)))
    with pytest.raises(ConfigError, match="label_column"):
        load_dataset(tmp_path / "x.npy", label_column=0)


def test_csv_ragged_rows(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("a,b,c\n1,2,3\n4,5\n6,7,8\n")
    assert "row 3 has 2 columns, expected 3" in _data_error(tmp_path / "r.csv")


def test_csv_non_numeric_and_empty_cells(tmp_path: Path) -> None:
    (tmp_path / "n.csv").write_text("1,2\n3,abc\n5,6\n")
    assert "row 2, column 2 has non-numeric cell 'abc'" in _data_error(tmp_path / "n.csv")
    (tmp_path / "h.csv").write_text("p,q\n1,2\n,4\n")
    assert "row 3, column 1 ('p') has an empty cell" in _data_error(tmp_path / "h.csv")


def test_csv_nan_and_inf_are_counted(tmp_path: Path) -> None:
    (tmp_path / "nan.csv").write_text("1,nan\n3,4\ninf,-inf\n7,8\n")
    assert "3 non-finite values" in _data_error(tmp_path / "nan.csv")


def test_csv_empty_or_header_only(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("")
    assert "empty file" in _data_error(tmp_path / "e.csv")
    (tmp_path / "h.csv").write_text("a,b\n")
    assert "no data rows" in _data_error(tmp_path / "h.csv")


# --------------------------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("name", ["imgs.idx", "train-images-idx3-ubyte", "x.idx3-ubyte"])
def test_idx_raw(tmp_path: Path, name: str) -> None:
    x = _ids_image(25, (3, 2))
    write_idx(tmp_path / name, x)
    ds = load_dataset(tmp_path / name)
    assert ds.shape == (1, 3, 2) and ds.levels == 256 and _same_examples(ds, x[:, None])


def test_idx_gz_and_other_dtypes(tmp_path: Path) -> None:
    x = _ids_image(25, (3, 2))
    write_idx(tmp_path / "raw-ubyte", x)
    (tmp_path / "images-ubyte.gz").write_bytes(gzip.compress((tmp_path / "raw-ubyte").read_bytes()))
    ds = load_dataset(tmp_path / "images-ubyte.gz")
    assert _same_examples(ds, x[:, None])
    for dtype in (np.int8, np.int16, np.int32, np.float32, np.float64):
        y = np.arange(24, dtype=dtype).reshape(6, 4)
        write_idx(tmp_path / f"{np.dtype(dtype).name}.idx", y)
        arr, _ = read_idx(tmp_path / f"{np.dtype(dtype).name}.idx")
        assert arr.dtype == np.dtype(dtype) and np.array_equal(arr, y)
    with pytest.raises(FileExistsError):  # the writer never overwrites
        write_idx(tmp_path / "raw-ubyte", x)


def test_idx_wrong_magic(tmp_path: Path) -> None:
    write_idx(tmp_path / "m.idx", np.zeros((4, 2, 2), np.uint8))
    data = bytearray((tmp_path / "m.idx").read_bytes())
    data[0] = 7
    (tmp_path / "m.idx").write_bytes(bytes(data))
    assert "magic number" in _data_error(tmp_path / "m.idx")
    data[0], data[2] = 0, 0x42
    (tmp_path / "m.idx").write_bytes(bytes(data))
    assert "dtype code 0x42" in _data_error(tmp_path / "m.idx")


def test_idx_dims_do_not_match_size(tmp_path: Path) -> None:
    write_idx(tmp_path / "d.idx", np.zeros((4, 2, 2), np.uint8))
    data = (tmp_path / "d.idx").read_bytes()
    (tmp_path / "d.idx").write_bytes(data[:-1])
    assert "need 32 bytes, file has 31" in _data_error(tmp_path / "d.idx")
    (tmp_path / "h.idx").write_bytes(data[:9])
    assert "too short" in _data_error(tmp_path / "h.idx")


def test_idx_gz_truncated(tmp_path: Path) -> None:
    blob = gzip.compress(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (tmp_path / "t-ubyte.gz").write_bytes(blob[: len(blob) // 2])
    assert "truncated gzip" in _data_error(tmp_path / "t-ubyte.gz")


def test_idx_gz_corrupt_bytes(tmp_path: Path) -> None:
    write_idx(tmp_path / "ok-ubyte", _ids_image(50, (8, 8)))
    blob = bytearray(gzip.compress((tmp_path / "ok-ubyte").read_bytes()))
    (tmp_path / "notgz-ubyte.gz").write_bytes(b"this is not gzip at all")
    assert "corrupt gzip" in _data_error(tmp_path / "notgz-ubyte.gz")
    blob[-8] ^= 0xFF  # CRC32 of the trailer
    (tmp_path / "crc-ubyte.gz").write_bytes(bytes(blob))
    assert "corrupt gzip" in _data_error(tmp_path / "crc-ubyte.gz")


@pytest.mark.parametrize("name", ["e.npy", "e.npz", "e.idx", "e-ubyte.gz", "e.csv"])
def test_empty_files(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    assert "empty file" in _data_error(tmp_path / name)


# --------------------------------------------------------------------------------------------
# malformed arrays


def test_nan_and_inf_in_npy_are_counted(tmp_path: Path) -> None:
    x = np.zeros((10, 3))
    x[1, 1], x[4, 2], x[7, 0] = np.nan, np.inf, -np.inf
    np.save(tmp_path / "bad.npy", x)
    assert "3 non-finite values (NaN or Inf) out of 30" in _data_error(tmp_path / "bad.npy")
    np.save(tmp_path / "big.npy", np.full((5, 2), 1e300))
    assert "non-finite" in _data_error(tmp_path / "big.npy")  # overflows float32


def test_bad_shapes_and_dtypes(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.arange(10.0))
    assert "reshape 1-D data" in _data_error(tmp_path / "one.npy")
    np.save(tmp_path / "five.npy", np.zeros((2, 2, 2, 2, 2)))
    assert "more than 4 dimensions" in _data_error(tmp_path / "five.npy")
    np.save(tmp_path / "empty.npy", np.zeros((0, 4)))
    assert "no examples" in _data_error(tmp_path / "empty.npy")
    np.save(tmp_path / "nofeat.npy", np.zeros((5, 0)))
    assert "examples are empty" in _data_error(tmp_path / "nofeat.npy")
    np.save(tmp_path / "c.npy", np.zeros((5, 2), dtype=complex))
    assert "not numeric" in _data_error(tmp_path / "c.npy")
    np.save(tmp_path / "s.npy", np.array([["a", "b"]] * 5))
    assert "not numeric" in _data_error(tmp_path / "s.npy")
    np.save(tmp_path / "o.npy", np.array([[1, None]] * 5, dtype=object), allow_pickle=True)
    assert "not a readable .npy" in _data_error(tmp_path / "o.npy")
    np.save(tmp_path / "big.npy", np.full((5, 3, 3), 300, dtype=np.int32))
    assert "0..255" in _data_error(tmp_path / "big.npy")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    assert "not a readable .npy" in _data_error(tmp_path / "junk.npy")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 garbage")
    assert "not a readable .npz" in _data_error(tmp_path / "junk.npz")


def test_too_few_examples(tmp_path: Path) -> None:
    np.save(tmp_path / "two.npy", np.zeros((2, 3)))
    assert "need at least 3" in _data_error(tmp_path / "two.npy")
    np.save(tmp_path / "three.npy", np.arange(9.0).reshape(3, 3))
    ds = load_dataset(tmp_path / "three.npy")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1, 1, 1)


def test_unsupported_suffix(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("1,2\n")
    assert "unsupported file type .txt" in _data_error(tmp_path / "x.txt")


# --------------------------------------------------------------------------------------------
# image folders


def _save_images(folder: Path, x: np.ndarray, mode: str, suffix: str = ".png") -> None:
    folder.mkdir(exist_ok=True)
    for i, img in enumerate(x):
        arr = img[0] if mode == "L" else np.transpose(img, (1, 2, 0))
        Image.fromarray(arr, mode=mode).save(folder / f"{i:03d}{suffix}")


def test_image_folder_gray(tmp_path: Path) -> None:
    x = _ids_image(12, (1, 6, 5))
    _save_images(tmp_path / "g", x, "L")
    (tmp_path / "g" / "notes.txt").write_text("ignored")
    ds = load_dataset(tmp_path / "g")
    assert ds.kind == "image" and ds.shape == (1, 6, 5) and ds.levels == 256
    assert ds.train.dtype == np.uint8 and _same_examples(ds, x)


def test_image_folder_rgb_and_palette(tmp_path: Path) -> None:
    x = _ids_image(9, (3, 4, 7))
    _save_images(tmp_path / "c", x, "RGB")
    ds = load_dataset(tmp_path / "c")
    assert ds.shape == (3, 4, 7) and _same_examples(ds, x)
    Image.fromarray(np.transpose(x[0], (1, 2, 0)), "RGB").convert("P").save(tmp_path / "c" / "zzz.png")
    ds = load_dataset(tmp_path / "c")  # a palette image is expanded to RGB
    assert sum(map(len, (ds.train, ds.val, ds.test))) == 10


def test_image_folder_jpeg(tmp_path: Path) -> None:
    _save_images(tmp_path / "j", _ids_image(5, (3, 8, 8)), "RGB", ".jpg")
    assert load_dataset(tmp_path / "j").shape == (3, 8, 8)


def test_image_folder_resize(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    _save_images(folder, np.full((3, 1, 10, 12), 200, np.uint8), "L")
    Image.fromarray(np.full((20, 6), 200, np.uint8), "L").save(folder / "big.png")
    ds = load_dataset(folder, image_size=(5, 4))
    xs, _ = _examples(ds)
    assert ds.shape == (1, 5, 4) and xs.shape == (4, 1, 5, 4)
    assert np.all(xs == 200)  # a constant image stays constant under bilinear resizing
    for bad in [(0, 4), (5,), "5x4", (2.5, 3), (True, 2)]:
        with pytest.raises(ConfigError, match="image_size"):
            load_dataset(folder, image_size=bad)  # type: ignore[arg-type]
    np.save(tmp_path / "x.npy", np.zeros((5, 2)))
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset(tmp_path / "x.npy", image_size=(2, 2))


def test_image_folder_mixed_sizes(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    _save_images(folder, np.zeros((3, 1, 4, 4), np.uint8), "L")
    Image.fromarray(np.zeros((5, 4), np.uint8), "L").save(folder / "001b.png")
    msg = _data_error(folder)
    assert str(folder / "001b.png") in msg and "4x5 differs from 4x4" in msg and "image_size" in msg


def test_image_folder_mixed_modes(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    _save_images(folder, np.zeros((3, 1, 4, 4), np.uint8), "L")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8), "RGB").save(folder / "002b.png")
    msg = _data_error(folder)
    assert str(folder / "002b.png") in msg and "mode RGB differs from L" in msg
    with pytest.raises(DataError, match="mode RGB differs"):  # resizing does not fix modes
        load_dataset(folder, image_size=(4, 4))


def test_image_folder_unsupported_mode_and_corrupt_file(tmp_path: Path) -> None:
    folder = tmp_path / "u"
    _save_images(folder, np.zeros((3, 1, 4, 4), np.uint8), "L")
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(folder / "rgba.png")
    assert "unsupported image mode RGBA" in _data_error(folder)
    (folder / "rgba.png").unlink()
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    msg = _data_error(folder)
    assert str(folder / "broken.png") in msg and "cannot read image" in msg


def test_image_folder_empty(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert "no image files" in _data_error(tmp_path / "empty")
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    assert "no image files" in _data_error(tmp_path / "empty")


def test_loading_never_writes_next_to_the_data(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((5, 2)))
    (tmp_path / "bad.csv").write_text("1,2\n3\n")
    load_dataset(tmp_path / "x.npy")
    with pytest.raises(DataError):
        load_dataset(tmp_path / "bad.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "x.npy"]
