"""Tests for `gan_jax.data.tfds_builders`: the `tfds` data source, offline and without TensorFlow.

No test touches the network or ~/tensorflow_datasets: every load gets a data_dir under tmp_path, tfds's
default data dir is pointed into tmp_path as well, and the lowest-level HTTP opener fails the test
unless a test replaces it on purpose.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sys
from unittest import mock

import ml_collections
import numpy as np
import pytest
import requests
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants as tfds_constants
from tensorflow_datasets.core.download import downloader as tfds_downloader
from tensorflow_datasets.testing import mocking as tfds_mocking

from gan_jax.data import idx
from gan_jax.data import sources
from gan_jax.data import tfds_builders
from gan_jax.errors import DataError


@pytest.fixture(autouse=True)
def _offline_and_sandboxed(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Points tfds's default data dir into tmp_path and makes any real HTTP request fail the test."""
    monkeypatch.setattr(tfds_constants, "DATA_DIR", str(tmp_path / "default_tfds_data_dir"))

    def no_network(url: str, **kwargs):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(tfds_downloader, "_open_url", no_network)


def _serve_from(folder: str, monkeypatch: pytest.MonkeyPatch) -> mock.Mock:
    """Makes `DownloadManager.download` return the files in `folder` named like the URLs' last part.

    This replaces the download step only in the test: the download manager and its checksum
    verification stay as they are for real users (`test_checksum_mismatch_is_a_data_error` checks that).
    """

    def download(urls: dict) -> dict:
        return {key: tuple(os.path.join(folder, url.rsplit("/", 1)[1]) for url in group)
                for key, group in urls.items()}

    fake = mock.Mock(side_effect=download)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", fake)
    monkeypatch.setattr(tfds_builders, "_check_reachable", lambda urls, dataset: None)  # nothing to reach
    return fake


def test_unreachable_hosts_fail_at_once_with_one_line(monkeypatch, tmp_path, capfd):
    """A name that does not resolve (RFC 2606's .invalid) ends the download before tfds's retries,
    and the line says what to do instead: the training commands' flags by default, or the caller's.
    tfds has printed nothing ("Downloading and preparing dataset...") and written nothing."""
    monkeypatch.setattr(tfds_builders.GanJaxMnist, "BASE_URL", "https://nowhere.invalid/")
    with pytest.raises(DataError, match=r"cannot reach nowhere.invalid:443 to download mnist .*no "
                                        r"network.*; use --config.data.source=idx") as info:
        tfds_builders.load("mnist", "test", data_dir=str(tmp_path / "a"))
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match=r"no network.*\]; give --data_dir$"):
        tfds_builders.load("mnist", "test", data_dir=str(tmp_path / "b"), offline_hint="give --data_dir")
    assert capfd.readouterr() == ("", "")
    assert sorted(os.listdir(tmp_path)) == []  # no tfds data dir, no downloads/ folder in it


def test_a_training_start_without_network_writes_nothing(monkeypatch, tmp_path, idx_dir, capfd):
    """The tfds source offline, through the trainer: the one-line error with the training hint, no
    workdir, no tfds folder, and nothing printed before the error."""
    from helpers import tiny_config
    from gan_jax import train
    monkeypatch.setattr(tfds_builders.GanJaxMnist, "BASE_URL", "https://nowhere.invalid/")
    config = tiny_config(idx_dir, **{"data.source": "tfds", "data.dir": str(tmp_path / "tfds")})
    with pytest.raises(DataError, match=r"no network.*; use --config.data.source=idx"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert sorted(os.listdir(tmp_path)) == []
    assert "Downloading and preparing" not in "".join(capfd.readouterr())


def test_reachability_is_checked_where_requests_would_connect(monkeypatch):
    """A listening host passes; with a proxy in the environment, the proxy is what must answer."""
    import socket
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        tfds_builders._check_reachable([f"http://127.0.0.1:{port}/file.gz"], "mnist")
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        tfds_builders._check_reachable(["https://nowhere.invalid/file.gz"], "mnist")  # the proxy answers


def test_prepares_offline_and_matches_the_idx_route(tmp_path, idx_dir, monkeypatch):
    download = _serve_from(idx_dir, monkeypatch)
    data_dir = str(tmp_path / "tfds")
    # None in sys.modules makes `import importlib_resources` fail: we must not need it.
    monkeypatch.setitem(sys.modules, "importlib_resources", None)

    for split in idx.SPLITS:
        got = tfds_builders.load("mnist", split, data_dir=data_dir)
        want = idx.load_split(idx_dir, split)
        assert got.images.dtype == np.uint8 and got.labels.dtype == np.uint8
        assert got.images.shape == want.images.shape and got.images.shape[1:] == (28, 28, 1)
        np.testing.assert_array_equal(got.images, want.images)  # same order, same pixels
        np.testing.assert_array_equal(got.labels, want.labels)
    # TensorFlow is not installed here, so any use of it would have failed above; where it is
    # installed, this catches an import. (etils only probes `importlib.util.find_spec("tensorflow")`.)
    assert "tensorflow" not in sys.modules
    assert download.call_count == 1  # both splits come from one prepare
    assert list((tmp_path / "tfds" / "gan_jax_mnist" / "1.0.0").glob("*-train.array_record-*"))

    again = tfds_builders.load("mnist", "train", data_dir=data_dir)
    assert download.call_count == 1  # reused the prepared data
    np.testing.assert_array_equal(again.images, idx.load_split(idx_dir, "train").images)


def test_fashion_mnist_is_a_separate_dataset(tmp_path, idx_dir, monkeypatch):
    download = _serve_from(idx_dir, monkeypatch)
    tfds_builders.load("fashion_mnist", "test", data_dir=str(tmp_path / "tfds"))
    (urls,), _ = download.call_args
    base_url = tfds_builders.GanJaxFashionMnist.BASE_URL
    assert all(url.startswith(base_url) for group in urls.values() for url in group)
    assert (tmp_path / "tfds" / "gan_jax_fashion_mnist" / "1.0.0").is_dir()


def test_every_url_has_a_pinned_checksum():
    for builder in tfds_builders.BUILDERS.values():
        stems = [stem for pair in idx.IDX_FILES.values() for stem in pair]
        urls = {builder.BASE_URL + stem + ".gz" for stem in stems}
        assert set(builder.url_infos) == urls


def test_load_split_under_mock_data(tmp_path, monkeypatch):
    # tfds 4.9.10 bug: mock_data sets the data source's `__getitems__` to a partial of a function taking
    # `self`, but MagicMock binds no `self` for that (non-standard) dunder, so a batched read raises
    # TypeError. Swap in the same function without `self` (only `serialized=True` reads need it).
    monkeypatch.setattr(tfds_mocking, "_getitems", lambda keys, generator: [generator[k] for k in keys])
    config = ml_collections.ConfigDict({"source": "tfds", "name": "mnist", "dir": str(tmp_path)})
    with tfds.testing.mock_data(num_examples=7, data_dir=str(tmp_path)):
        split = sources.load_split(config, "train")
    assert split.images.shape == (7, 28, 28, 1) and split.images.dtype == np.uint8
    assert split.labels.shape == (7,) and split.labels.dtype == np.uint8
    assert split.labels.max() < 10


def _assert_one_line(error: DataError) -> str:
    message = str(error)
    assert "\n" not in message
    return message


def test_a_failed_download_is_a_data_error_and_a_later_load_recovers(tmp_path, idx_dir, monkeypatch):
    """The host answered the reachability check, then the download failed (tfds's retries gave up)."""
    def unreachable(url: str, **kwargs):
        # What requests raises once urllib3 has given up retrying.
        raise requests.exceptions.ConnectionError(
            f"Max retries exceeded with url: {url}\n(Caused by NameResolutionError)")

    monkeypatch.setattr(tfds_builders, "_check_reachable", lambda urls, dataset: None)
    monkeypatch.setattr(tfds_downloader, "_open_url", unreachable)
    data_dir = str(tmp_path / "tfds")
    with pytest.raises(DataError) as raised:
        tfds_builders.load("mnist", "train", data_dir=data_dir)
    message = _assert_one_line(raised.value)
    assert "cannot download mnist" in message and "data.source=idx" in message

    _serve_from(idx_dir, monkeypatch)  # the failed attempt left nothing that blocks a new one
    split = tfds_builders.load("mnist", "train", data_dir=data_dir)
    np.testing.assert_array_equal(split.labels, idx.load_split(idx_dir, "train").labels)


def test_checksum_mismatch_is_a_data_error(tmp_path, monkeypatch):
    @contextlib.contextmanager
    def wrong_file(url: str, **kwargs):
        response = mock.Mock(url=url, headers={"Content-Disposition": 'attachment; filename="f.gz"'})
        yield response, iter([b"not the published file"])

    monkeypatch.setattr(tfds_builders, "_check_reachable", lambda urls, dataset: None)
    monkeypatch.setattr(tfds_downloader, "_open_url", wrong_file)
    with pytest.raises(DataError, match="sha256") as raised:
        tfds_builders.load("mnist", "test", data_dir=str(tmp_path / "tfds"))
    _assert_one_line(raised.value)


def test_unknown_name_or_split_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'cifar10'"):
        tfds_builders.load("cifar10", "train", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="unknown split 'validation'"):
        tfds_builders.load("mnist", "validation", data_dir=str(tmp_path))


def test_unusable_data_dir_is_a_data_error(tmp_path, idx_dir, monkeypatch):
    _serve_from(idx_dir, monkeypatch)
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a data_dir below a file cannot be created, even by root
    with pytest.raises(DataError, match="cannot prepare or read mnist") as raised:
        tfds_builders.load("mnist", "train", data_dir=str(blocker / "tfds"))
    _assert_one_line(raised.value)
