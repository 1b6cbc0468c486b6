"""Tests for `gan_jax.tfds_idx`: the `tfds` data source, offline and without TensorFlow.

No test touches the network or ~/tensorflow_datasets: every load gets a data_dir under tmp_path, tfds's
default data dir is pointed into tmp_path as well, and the lowest-level HTTP opener fails the test
unless a test replaces it on purpose.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.abc
import pathlib
import sys
from typing import Iterator
from unittest import mock

import ml_collections
import numpy as np
import pytest
import requests
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants as tfds_constants
from tensorflow_datasets.core.download import downloader as tfds_downloader

from gan_jax import input_pipeline, tfds_idx
from gan_jax.errors import DataError

_NUM_EXAMPLES = {"train": 30, "test": 10}


@pytest.fixture(autouse=True)
def _offline_and_sandboxed(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Points tfds's default data dir into tmp_path and makes any real HTTP request fail the test."""
    monkeypatch.setattr(tfds_constants, "DATA_DIR", str(tmp_path / "default_tfds_data_dir"))

    def no_network(url: str, **kwargs):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(tfds_downloader, "_open_url", no_network)


@pytest.fixture
def idx_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    """A folder with the four gzipped IDX files: random images and labels, 30 train and 10 test."""
    folder = tmp_path / "idx"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, (image_stem, label_stem) in input_pipeline.IDX_FILES.items():
        n = _NUM_EXAMPLES[split]
        _write_idx(folder / f"{image_stem}.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(folder / f"{label_stem}.gz", rng.integers(0, 10, n, dtype=np.uint8))
    return folder


def _write_idx(path: pathlib.Path, array: np.ndarray) -> None:
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes()))


def _serve_from(folder: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> mock.Mock:
    """Makes `DownloadManager.download` return the files in `folder` named like the URLs' last part.

    This replaces the download step only in the test: the download manager and its checksum
    verification stay as they are for real users (`test_checksum_mismatch_is_a_data_error` checks that).
    """

    def download(urls: dict) -> dict:
        return {key: tuple(folder / url.rsplit("/", 1)[1] for url in group) for key, group in urls.items()}

    fake = mock.Mock(side_effect=download)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", fake)
    return fake


class _ImportSpy(importlib.abc.MetaPathFinder):
    """Records attempts to import the given top-level packages, found or not."""

    def __init__(self, *names: str) -> None:
        self.names = names
        self.attempts: list[str] = []

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            self.attempts.append(fullname)
        return None  # let the normal finders decide


@contextlib.contextmanager
def _spy_imports(*names: str) -> Iterator[_ImportSpy]:
    spy = _ImportSpy(*names)
    sys.meta_path.insert(0, spy)
    try:
        yield spy
    finally:
        sys.meta_path.remove(spy)


def test_prepares_offline_and_matches_the_idx_route(tmp_path, idx_dir, monkeypatch):
    download = _serve_from(idx_dir, monkeypatch)
    data_dir = str(tmp_path / "tfds")
    # None in sys.modules makes `import importlib_resources` fail: we must not need it.
    monkeypatch.setitem(sys.modules, "importlib_resources", None)

    with _spy_imports("tensorflow") as spy:
        for split in input_pipeline.SPLITS:
            got = tfds_idx.load("mnist", split, data_dir=data_dir)
            want = input_pipeline.load_idx_split(str(idx_dir), split)
            assert got.images.dtype == np.uint8 and got.labels.dtype == np.uint8
            assert got.images.shape == (_NUM_EXAMPLES[split], 28, 28, 1)
            np.testing.assert_array_equal(got.images, want.images)  # same order, same pixels
            np.testing.assert_array_equal(got.labels, want.labels)
    assert spy.attempts == [], "tensorflow import attempted"
    assert "tensorflow" not in sys.modules
    assert download.call_count == 1  # both splits come from one prepare
    assert list((tmp_path / "tfds" / "gan_jax_mnist" / "1.0.0").glob("*-train.array_record-*"))

    again = tfds_idx.load("mnist", "train", data_dir=data_dir)
    assert download.call_count == 1  # reused the prepared data
    np.testing.assert_array_equal(again.images, input_pipeline.load_idx_split(str(idx_dir), "train").images)


def test_fashion_mnist_is_a_separate_dataset(tmp_path, idx_dir, monkeypatch):
    download = _serve_from(idx_dir, monkeypatch)
    tfds_idx.load("fashion_mnist", "test", data_dir=str(tmp_path / "tfds"))
    (urls,), _ = download.call_args
    assert all(url.startswith(tfds_idx.GanJaxFashionMnist.BASE_URL) for group in urls.values() for url in group)
    assert (tmp_path / "tfds" / "gan_jax_fashion_mnist" / "1.0.0").is_dir()


def test_every_url_has_a_pinned_checksum():
    for builder in tfds_idx.BUILDERS.values():
        urls = {builder.BASE_URL + stem + ".gz" for stems in input_pipeline.IDX_FILES.values() for stem in stems}
        assert set(builder.url_infos) == urls


def test_load_split_under_mock_data(tmp_path):
    config = ml_collections.ConfigDict({"source": "tfds", "name": "mnist", "dir": str(tmp_path)})
    with tfds.testing.mock_data(num_examples=7, data_dir=str(tmp_path)):
        split = input_pipeline.load_split(config, "train")
    assert split.images.shape == (7, 28, 28, 1) and split.images.dtype == np.uint8
    assert split.labels.shape == (7,) and split.labels.dtype == np.uint8
    assert split.labels.max() < 10


def _assert_one_line(error: DataError) -> str:
    message = str(error)
    assert "\n" not in message
    return message


def test_no_network_is_a_data_error_and_a_later_load_recovers(tmp_path, idx_dir, monkeypatch):
    def unreachable(url: str, **kwargs):
        # What requests raises once urllib3 has given up retrying an unresolvable host.
        raise requests.exceptions.ConnectionError(f"Max retries exceeded with url: {url}\n(Caused by NameResolutionError)")

    monkeypatch.setattr(tfds_downloader, "_open_url", unreachable)
    data_dir = str(tmp_path / "tfds")
    with pytest.raises(DataError) as raised:
        tfds_idx.load("mnist", "train", data_dir=data_dir)
    message = _assert_one_line(raised.value)
    assert "cannot download mnist" in message and "data.source=idx" in message

    _serve_from(idx_dir, monkeypatch)  # the failed attempt left nothing that blocks a new one
    assert len(tfds_idx.load("mnist", "train", data_dir=data_dir).labels) == _NUM_EXAMPLES["train"]


def test_checksum_mismatch_is_a_data_error(tmp_path, monkeypatch):
    @contextlib.contextmanager
    def wrong_file(url: str, **kwargs):
        response = mock.Mock(url=url, headers={"Content-Disposition": 'attachment; filename="f.gz"'})
        yield response, iter([b"not the published file"])

    monkeypatch.setattr(tfds_downloader, "_open_url", wrong_file)
    with pytest.raises(DataError, match="sha256") as raised:
        tfds_idx.load("mnist", "test", data_dir=str(tmp_path / "tfds"))
    _assert_one_line(raised.value)


def test_unknown_name_or_split_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'cifar10'"):
        tfds_idx.load("cifar10", "train", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="unknown split 'validation'"):
        tfds_idx.load("mnist", "validation", data_dir=str(tmp_path))


def test_unusable_data_dir_is_a_data_error(tmp_path, idx_dir, monkeypatch):
    _serve_from(idx_dir, monkeypatch)
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a data_dir below a file cannot be created, even by root
    with pytest.raises(DataError, match="cannot prepare or read mnist") as raised:
        tfds_idx.load("mnist", "train", data_dir=str(blocker / "tfds"))
    _assert_one_line(raised.value)
