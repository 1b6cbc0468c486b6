"""The `tfds` data source: MNIST and Fashion-MNIST through tensorflow-datasets, without TensorFlow.

tfds can read prepared datasets without TensorFlow (`as_data_source` over ArrayRecord files), but its
stock `mnist` and `fashion_mnist` builders need TensorFlow to prepare them: they store images with
`tfds.features.Image`, whose encoder is `tf.image.encode_png`. The builders here download the same
canonical IDX files through tfds's download manager, checked against pinned sha256 sums, decode them
with `gan_jax.data.idx.read_idx_file`, and store each image as a raw `tfds.features.Tensor`,
which encodes and decodes with numpy alone. They are registered as `gan_jax_mnist` and
`gan_jax_fashion_mnist` so they never clash with tfds's own builders (or their prepared data).

Importing this module registers the builders, so it must be imported under one module name only.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from typing import Iterable, Iterator

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import checksums as tfds_checksums
from tensorflow_datasets.core.download import download_manager as tfds_download_manager

from gan_jax.data import idx
from gan_jax.errors import DataError
from gan_jax.log import logger

_MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

# (file name, size in bytes, sha256), copied from tfds 4.9.10's url_checksums/{mnist,fashion_mnist}.txt.
# Pinned here rather than in a checksums.tsv next to this file: tfds would find that file only through
# `code_path` (which needs `importlib_resources` and package data), and sums in code cannot go missing.
_MNIST_FILES = (
    ("train-images-idx3-ubyte.gz", 9912422,
     "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    ("train-labels-idx1-ubyte.gz", 28881,
     "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    ("t10k-images-idx3-ubyte.gz", 1648877,
     "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    ("t10k-labels-idx1-ubyte.gz", 4542,
     "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
)
_FASHION_MNIST_FILES = (
    ("train-images-idx3-ubyte.gz", 26421880,
     "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    ("train-labels-idx1-ubyte.gz", 29515,
     "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    ("t10k-images-idx3-ubyte.gz", 4422102,
     "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    ("t10k-labels-idx1-ubyte.gz", 5148,
     "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
)

# What to do instead, for a command whose data comes from the config; other commands say their own.
TRAINING_HINT = "use --config.data.source=idx --config.data.dir=FOLDER with the IDX files"


class _Unavailable(DataError):
    """The files cannot be downloaded; `load` adds what the user can do instead."""
# How long the reachability check waits for a TCP connection before calling the host unreachable.
_CONNECT_TIMEOUT_S = 10.0


def _check_reachable(urls: Iterable[str], dataset: str) -> None:
    """Fails at once, with the one-line error, when the download's hosts cannot be reached.

    tfds's downloader retries a failed connection about ten times with exponential backoff, which
    took 3.5 minutes on a machine without network before the error. One TCP connection to each host
    (or to the proxy the environment names for it) tells the same within seconds; a connection that
    drops mid-download is left to tfds's retries.
    """
    import requests  # tfds downloads with requests; ask it which proxy it would use

    endpoints = set()
    for url in urls:
        proxy = requests.utils.get_environ_proxies(url).get(urllib.parse.urlsplit(url).scheme)
        target = urllib.parse.urlsplit(proxy if proxy else url)
        endpoints.add((target.hostname, target.port or (443 if target.scheme == "https" else 80)))
    for host, port in sorted(endpoints):
        try:
            socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S).close()
        except OSError as e:
            raise _Unavailable(f"cannot reach {host}:{port} to download {dataset} through "
                               f"tensorflow-datasets (no network?) [{_one_line(e)}]") from None


def _url_infos(base_url: str, files: tuple) -> dict[str, tfds_checksums.UrlInfo]:
    return {
        base_url + name: tfds_checksums.UrlInfo(
            size=tfds.core.utils.Size(size), checksum=sha256, filename=name)
        for name, size, sha256 in files
    }


def _one_line(error: BaseException) -> str:
    """The error's type and message on one line (requests and tfds messages span several)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


class _IdxBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Builds a dataset from the four canonical IDX files; subclasses name the dataset and its files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Canonical IDX files stored as raw uint8 tensors (no TensorFlow needed)."}
    DATASET: str  # our config's `data.name`, for messages
    BASE_URL: str
    # Shadows tfds's `url_infos` class property (which reads a checksums.tsv next to the code): the
    # download manager validates every download against these, and `force_checksums_validation` below
    # makes any URL missing from them an error rather than an unchecked download.
    url_infos: dict[str, tfds_checksums.UrlInfo]

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo directly, not `dataset_info_from_configs`: that looks for README/CITATIONS files
        # next to this module.
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.DATASET} as raw uint8 tensors, in the files' original order.",
            features=tfds.features.FeaturesDict({
                # Not tfds.features.Image: encoding an image array calls tf.image.encode_png.
                "image": tfds.features.Tensor(shape=idx.IMAGE_SHAPE, dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
            # Keep the files' order, so this source gives exactly the arrays the `idx` source does.
            disable_shuffling=True,
        )

    @classmethod
    def split_urls(cls) -> dict[str, tuple[str, str]]:
        """{split: (the images' URL, the labels' URL)}."""
        return {split: tuple(cls.BASE_URL + stem + ".gz" for stem in idx.IDX_FILES[split])
                for split in idx.SPLITS}

    def _log_download_bytes(self) -> None:
        """Checks that the download's hosts answer, where tfds would announce the download.

        tfds calls this when the data is not prepared, before it creates any folder or downloads,
        and by default prints "Downloading and preparing dataset Unknown size (download: Unknown
        size, ...)" to stdout, unconditionally (no verbosity setting reaches it). Offline, the
        check fails here: the one-line error is all the user sees, and nothing is written.
        """
        _check_reachable([url for urls in self.split_urls().values() for url in urls], self.DATASET)
        logger.info("downloading %s through tensorflow-datasets into %s", self.DATASET,
                    self.data_dir)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        urls = self.split_urls()
        try:
            paths = dl_manager.download(urls)
        except tfds_download_manager.NonMatchingChecksumError as e:
            raise _Unavailable(
                f"a {self.DATASET} file downloaded through tensorflow-datasets does not match its sha256 "
                f"(corrupt download or changed upstream file)") from e
        except (OSError, tfds.download.DownloadError) as e:  # requests' errors are OSErrors
            raise _Unavailable(
                f"cannot download {self.DATASET} through tensorflow-datasets (no network?) "
                f"[{_one_line(e)}]") from e
        return {split: self._generate_examples(*paths[split]) for split in idx.SPLITS}

    def _generate_examples(
        self, images_path: os.PathLike, labels_path: os.PathLike
    ) -> Iterator[tuple[int, dict]]:
        images = idx.read_idx_file(os.fspath(images_path), ndim=3)
        labels = idx.read_idx_file(os.fspath(labels_path), ndim=1)
        if len(images) != len(labels):  # zip() below would silently drop the excess
            raise DataError(f"{images_path}: {len(images)} images but {len(labels)} labels in {labels_path}")
        # Integer keys in file order: with `disable_shuffling` tfds writes the examples sorted by key.
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image[..., None], "label": label}


class GanJaxMnist(_IdxBuilder):
    """MNIST, registered as `gan_jax_mnist`."""

    name = "gan_jax_mnist"
    DATASET = "mnist"
    BASE_URL = _MNIST_URL
    url_infos = _url_infos(_MNIST_URL, _MNIST_FILES)


class GanJaxFashionMnist(_IdxBuilder):
    """Fashion-MNIST, registered as `gan_jax_fashion_mnist`."""

    name = "gan_jax_fashion_mnist"
    DATASET = "fashion_mnist"
    BASE_URL = _FASHION_MNIST_URL
    url_infos = _url_infos(_FASHION_MNIST_URL, _FASHION_MNIST_FILES)


BUILDERS = {"mnist": GanJaxMnist, "fashion_mnist": GanJaxFashionMnist}


def _download_config() -> tfds.download.DownloadConfig:
    # No GCS probe for prepared copies (none exist for our names), and no unchecked downloads.
    return tfds.download.DownloadConfig(try_download_gcs=False, force_checksums_validation=True)


def load(name: str, split: str, data_dir: str | None = None,
         offline_hint: str = TRAINING_HINT) -> idx.Split:
    """Loads a whole split through tensorflow-datasets, downloading and preparing it on first use.

    Args:
      name: the dataset, one of `config.DATASETS` ("mnist" or "fashion_mnist").
      split: "train" or "test".
      data_dir: the tfds data folder; None means tfds's default (`$TFDS_DATA_DIR` or ~/tensorflow_datasets).
      offline_hint: what the error of a failed download tells the user to do instead.

    Returns:
      The split as uint8 arrays, images (N, 28, 28, 1) and labels (N,), in the original files' order:
      the same arrays `idx.load_split` gives for the same files.

    Raises:
      DataError: unknown name or split, download failure, checksum mismatch, or an unusable data_dir.
    """
    if name not in BUILDERS:
        raise DataError(
            f"unknown dataset {name!r} for data.source='tfds'; expected one of {sorted(BUILDERS)}")
    if split not in idx.SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {list(idx.SPLITS)}")
    where = data_dir or "the default tfds data dir"
    try:
        builder = BUILDERS[name](data_dir=data_dir, file_format="array_record")
        # Returns at once when the prepared folder exists (tfds renames it into place only when
        # complete); `is_prepared()` would log a warning for the not-yet-created folder instead.
        builder.download_and_prepare(download_config=_download_config())
        source = builder.as_data_source(split)
        examples = source.__getitems__(range(len(source)))  # one batched read, in record order
    except _Unavailable as e:
        raise DataError(f"{e}; {offline_hint}") from None
    except OSError as e:  # download errors became DataError in `_split_generators`: this is the disk
        raise DataError(f"cannot prepare or read {name} in {where}: {_one_line(e)}") from e
    images = np.stack([example["image"] for example in examples]).astype(np.uint8, copy=False)
    labels = np.asarray([example["label"] for example in examples], dtype=np.uint8)
    return idx.Split(images, labels)
