"""Users' own images: the folder and npz sources (gan_jax.data.images), the networks for every image
size and channel count, the pictures, and an evaluator trained on one's own data.

Everything runs on small data the tests write; networks are narrow so each shape compiles in seconds.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from helpers import tiny_config, trees_equal
from gan_jax import config as config_lib
from gan_jax.data import images as images_lib
from gan_jax.data import sources
from gan_jax.errors import ConfigError, DataError, UserError
from gan_jax.model.networks import Discriminator, Generator, depth, generator_layers
from gan_jax.reporting import pictures


def _save(path: str, array: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array).save(path)


def _pictures(n: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """Images with a bright square whose place says the class (i % 2), so a classifier can learn it."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, size, size, channels), dtype=np.uint8)
    for i in range(n):
        corner = (i % 2) * (size // 2)
        images[i, corner:corner + size // 2, corner:corner + size // 2] = 255
    return images


def write_folder(root: str, size: int = 32, channels: int = 3, classes=("cat", "dog"),
                 num_train: int = 24, num_test: int = 8, suffix: str = ".png") -> str:
    """train/<class>/*.png and test/<class>/*.png (class i's images are `_pictures` of class i)."""
    for split, n in (("train", num_train), ("test", num_test)):
        images = _pictures(n, size, channels, seed=len(split))
        for i, image in enumerate(images):
            folder = os.path.join(root, split, classes[i % 2]) if classes else os.path.join(root, split)
            _save(os.path.join(folder, f"{i:03d}{suffix}"), image)
    return root


def folder_config(data_dir: str, **overrides):
    config = tiny_config(data_dir)
    config.data.source, config.data.name = "folder", "custom"
    config.num_steps = 2
    for key, value in overrides.items():
        config_lib_set(config, key, value)
    return config


def config_lib_set(config, key, value):
    from helpers import set_key
    set_key(config, key, value)


# --- The folder source ---------------------------------------------------------------------------------


def test_a_folder_of_class_folders_gives_sorted_class_labels(tmp_path):
    root = write_folder(str(tmp_path / "pets"), classes=("dog", "cat"))  # written in another order
    split = images_lib.load_folder_split(root, "train", progress=False)
    assert split.images.shape == (24, 32, 32, 3) and split.images.dtype == np.uint8
    paths, labels, classes = images_lib.folder_files(os.path.join(root, "train"))
    assert classes == ["cat", "dog"]  # sorted names are the labels, as torchvision's ImageFolder
    assert all(os.path.basename(os.path.dirname(p)) == classes[y] for p, y in zip(paths, labels))
    np.testing.assert_array_equal(split.labels, labels)
    # Lossless PNG: the pixels are the ones written.
    np.testing.assert_array_equal(split.images[0], np.asarray(Image.open(paths[0])))


def test_an_unlabelled_folder_and_a_missing_test_split(tmp_path):
    root = str(tmp_path / "faces")
    for i, image in enumerate(_pictures(6, 28, 1)):
        _save(os.path.join(root, "train", f"{i}.png"), image)
    split = images_lib.load_folder_split(root, "train", progress=False)
    assert split.images.shape == (6, 28, 28, 1) and len(split.labels) == 0
    data = _data("folder", root)
    assert sources.load_split(data, "test") is None
    assert trees_equal(sources.load_test_split(data), split)  # evaluations compare with train then


def test_channels_and_image_size_convert_what_is_read(tmp_path):
    root = write_folder(str(tmp_path / "rgb"), size=32, channels=3)
    gray = images_lib.load_folder_split(root, "train", channels=1, progress=False)
    assert gray.images.shape == (24, 32, 32, 1)
    resized = images_lib.load_folder_split(root, "train", image_size=64, progress=False)
    assert resized.images.shape == (24, 64, 64, 3)


def test_the_decoded_folder_is_cached_and_read_again_when_a_file_changes(tmp_path, monkeypatch):
    root = write_folder(str(tmp_path / "cached"))
    first = images_lib.load_folder_split(root, "train", progress=False)
    assert os.path.isfile(os.path.join(root, images_lib.CACHE_DIR, "train.npz"))

    def no_decoding(*args):
        raise AssertionError("decoded again")
    monkeypatch.setattr(images_lib, "_decode", no_decoding)
    assert trees_equal(images_lib.load_folder_split(root, "train", progress=False), first)
    moved = root + "_moved"  # a moved folder (mv keeps the files' times) keeps its cache
    os.rename(root, moved)
    assert trees_equal(images_lib.load_folder_split(moved, "train", progress=False), first)
    os.rename(moved, root)
    monkeypatch.undo()
    # A changed file (size and time) and another conversion are read again.
    changed = os.path.join(root, "train", "cat", "000.png")
    _save(changed, np.zeros((32, 32, 3), np.uint8))
    again = images_lib.load_folder_split(root, "train", progress=False)
    assert again.images[0].max() == 0 and not trees_equal(again, first)
    assert images_lib.load_folder_split(root, "train", channels=1, progress=False).images.shape[-1] == 1


def test_jpeg_and_grayscale_files(tmp_path):
    root = write_folder(str(tmp_path / "jpeg"), size=32, channels=1, suffix=".jpg")
    split = images_lib.load_folder_split(root, "train", progress=False)
    assert split.images.shape == (24, 32, 32, 1)


# --- The npz source ------------------------------------------------------------------------------------


def _data(source: str, path: str, **fields):
    import ml_collections
    return ml_collections.ConfigDict({"source": source, "name": "custom", "dir": path, "image_size": 0,
                                      "channels": 0, "check_dataset": False, **fields})


def test_an_npz_with_and_without_its_test_split(tmp_path):
    path = str(tmp_path / "digits.npz")
    images = _pictures(10, 32, 1)[..., 0]  # (N, H, W): one channel
    np.savez(path, images=images, labels=np.arange(10) % 2, test_images=images[:4],
             test_labels=np.arange(4) % 2)
    train = sources.load_split(_data("npz", path), "train")
    assert train.images.shape == (10, 32, 32, 1) and train.labels.dtype == np.int32
    assert sources.load_split(_data("npz", path), "test").images.shape == (4, 32, 32, 1)
    np.savez(path, images=images)
    assert sources.load_split(_data("npz", path), "test") is None
    assert len(sources.load_test_split(_data("npz", path)).images) == 10
    rgb = sources.load_split(_data("npz", path, channels=3, image_size=64), "train")
    assert rgb.images.shape == (10, 64, 64, 3)


# --- Bad input: one line naming the file or the numbers ------------------------------------------------


def _bad_folder(tmp_path, case: str) -> tuple[str, dict]:
    root = str(tmp_path / case.replace(" ", "_"))
    options = {}
    if case == "empty folder":
        os.makedirs(os.path.join(root, "train"))
    elif case == "non-images":
        os.makedirs(os.path.join(root, "train"))
        with open(os.path.join(root, "train", "notes.png"), "w") as f:
            f.write("not an image")
    elif case == "truncated image":
        write_folder(root)
        path = os.path.join(root, "train", "dog", "001.png")
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    elif case == "mixed sizes":
        write_folder(root)
        _save(os.path.join(root, "train", "cat", "big.png"), _pictures(1, 64, 3)[0])
    elif case == "mixed channels":
        write_folder(root)
        _save(os.path.join(root, "train", "cat", "gray.png"), _pictures(1, 32, 1)[0])
    elif case == "empty class folder":
        write_folder(root)
        os.makedirs(os.path.join(root, "train", "fish"))
    elif case == "no train folder":
        os.makedirs(root)
    return root, options


FOLDER_CASES = {
    "empty folder": "holds no images",
    "non-images": "notes.png: not a readable image",
    "truncated image": "001.png: not a readable image",
    "mixed sizes": "big.png is 64x64 but",
    "mixed channels": r"gray.png has 1 channel\(s\) but",
    "empty class folder": "class folder .*fish holds no images",
    "no train folder": "has no train/ folder",
}


@pytest.mark.parametrize("case", FOLDER_CASES)
def test_bad_folders_are_one_line_errors_naming_the_file(tmp_path, case):
    root, _ = _bad_folder(tmp_path, case)
    with pytest.raises(DataError, match=FOLDER_CASES[case]) as info:
        sources.load_split(_data("folder", root), "train")
    assert "\n" not in str(info.value)


NPZ_CASES = {
    "no images": (dict(pictures=np.zeros((2, 8, 8), np.uint8)), "holds no 'images' array .*pictures"),
    "labels of the wrong length": (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.arange(3)),
                                   r"'labels' has shape \(3,\), expected \(4,\)"),
    "labels not integers": (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.ones(4) / 2),
                            "'labels' must be integers, got float64"),
    "float images": (dict(images=np.zeros((4, 8, 8), np.float32)), "must be uint8"),
}


@pytest.mark.parametrize("case", NPZ_CASES)
def test_bad_npz_files_are_one_line_errors(tmp_path, case):
    arrays, message = NPZ_CASES[case]
    path = str(tmp_path / "data.npz")
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message) as info:
        sources.load_split(_data("npz", path), "train")
    assert "\n" not in str(info.value)


def test_an_npz_that_is_not_one_is_refused(tmp_path):
    path = str(tmp_path / "data.npz")
    with open(path, "w") as f:
        f.write("text")
    with pytest.raises(DataError, match="cannot read"):
        sources.load_split(_data("npz", path), "train")


def test_images_the_networks_cannot_take_are_refused(tmp_path):
    path = str(tmp_path / "odd.npz")
    np.savez(path, images=np.zeros((4, 30, 30), np.uint8))
    config = folder_config(path, **{"data.source": "npz"})
    from gan_jax.train import train_and_evaluate
    with pytest.raises(DataError, match="the images are 30x30; the networks take square images of 28, 32"):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")  # nothing written


def test_config_errors_of_the_new_sources():
    config = tiny_config("")
    config.data.source, config.data.name = "tfds", "custom"
    with pytest.raises(ConfigError, match="tfds' reads MNIST or Fashion-MNIST only"):
        config_lib.validate(config)
    config = tiny_config("some/folder")
    config.data.image_size = 64
    with pytest.raises(ConfigError, match="gives 28x28 grayscale images"):
        config_lib.validate(config)
    config.data.image_size = 48
    with pytest.raises(ConfigError, match="data.image_size=48"):
        config_lib.validate(config)


# --- Networks for every size and channel count ---------------------------------------------------------


@pytest.mark.parametrize("size", [28, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_networks_for_every_size_and_channel_count(size, channels):
    generator = Generator(width=4, image_size=size, channels=channels)
    variables = generator.init(jax.random.key(0), jnp.zeros((2, 16)), train=False)
    images = generator.apply(variables, jnp.ones((2, 16)), train=False)
    assert images.shape == (2, size, size, channels)
    discriminator = Discriminator(width=4)
    d_variables = discriminator.init(jax.random.key(1), images, train=False)
    assert discriminator.apply(d_variables, images, train=False).shape == (2,)
    features = discriminator.apply(d_variables, images, train=False, features_only=True)
    # D ends at 7x7 (28) or 4x4 (DCGAN), with width * 2^(depth - 1) features.
    side = 7 if size == 28 else 4
    assert features.shape == (2, side * side * 4 * 2 ** (depth(size) - 1))
    layers = generator_layers(4, size, channels)
    assert layers[-1][0] == channels and len(layers) == depth(size) + 1


def test_other_sizes_leave_the_tutorial_network_as_it_was():
    """28x28x1 is the tutorial's network: three transposed convolutions, k7 first."""
    assert generator_layers(64, 28, 1) == [(128, 7, 1, "VALID"), (64, 4, 2, ((2, 2), (2, 2))),
                                           (1, 4, 2, ((2, 2), (2, 2)))]
    assert [layer[:3] for layer in generator_layers(64, 32, 3)] == [(256, 4, 1), (128, 4, 2), (64, 4, 2),
                                                                    (3, 4, 2)]
    with pytest.raises(ValueError, match="no network for 48x48"):
        depth(48)


# --- Training on one's own images ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pets(tmp_path_factory) -> str:
    return write_folder(str(tmp_path_factory.mktemp("pets")), size=32, channels=3)


@pytest.fixture(scope="module")
def pets_run(pets, tmp_path_factory):
    """Two steps of a conditional run on the 32x32 RGB folder, then a resume to four."""
    from gan_jax.train import train_and_evaluate
    workdir = str(tmp_path_factory.mktemp("pets_run") / "run")
    config = folder_config(pets, **{"model.num_classes": 2, "model.g_condition": "cbn",
                                    "model.d_condition": "projection", "sample_every": 2,
                                    "checkpoint_every": 2})
    train_and_evaluate(config, workdir)
    config.num_steps = 4
    final = train_and_evaluate(config, workdir)
    return config, workdir, final


def test_a_run_on_a_folder_records_the_image_shape_and_renders_colour(pets_run):
    config, workdir, final = pets_run
    assert int(final.step) == 4
    with open(os.path.join(workdir, "config.json")) as f:
        data = json.load(f)["data"]
    assert (data["image_size"], data["channels"], data["source"]) == (32, 3, "folder")
    grid = Image.open(os.path.join(workdir, "samples", "step_0000004.png"))
    # A class grid: 2 classes x 8 columns of 32x32 RGB images.
    assert grid.mode == "RGB" and grid.size == (8 * 32, 2 * 32)
    assert Image.open(os.path.join(workdir, "progress.gif")).n_frames == 2


def test_a_resume_on_a_folder_is_the_uninterrupted_run(pets, pets_run, tmp_path):
    from gan_jax.train import train_and_evaluate
    config, _, resumed = pets_run
    straight = train_and_evaluate(config, str(tmp_path / "straight"))
    assert trees_equal(straight, resumed)


def test_a_checkpoint_of_other_images_is_refused(pets_run, tmp_path):
    from gan_jax.train import train_and_evaluate
    config, workdir, _ = pets_run
    gray = config.copy_and_resolve_references()
    gray.data.channels = 1
    with pytest.raises(ConfigError, match="data.channels") as info:
        train_and_evaluate(gray, workdir)
    assert "\n" not in str(info.value)


def test_sampling_a_colour_run_writes_rgb_grids_and_arrays(pets_run, tmp_path):
    from gan_jax.sample import sample
    _, workdir, _ = pets_run
    sample(workdir=workdir, out=str(tmp_path / "g.png"), npy=str(tmp_path / "g.npy"), num=6,
           label=1)
    assert np.load(tmp_path / "g.npy").shape == (6, 32, 32, 3)
    assert Image.open(tmp_path / "g.png").mode == "RGB"


def test_labels_must_match_the_classes_of_ones_own_data(pets, tmp_path):
    from gan_jax.train import train_and_evaluate
    config = folder_config(pets, **{"model.num_classes": 3, "model.g_condition": "cbn",
                                    "model.d_condition": "projection"})
    with pytest.raises(DataError, match="the data has 2 classes, but model.num_classes is 3"):
        train_and_evaluate(config, str(tmp_path / "run"))


def test_grids_of_rgb_and_gray_images():
    rgb = np.zeros((4, 5, 6, 3), np.uint8)
    rgb[1] = 255
    grid = pictures.image_grid(rgb, 2, 2)
    assert grid.shape == (10, 12, 3) and grid[0:5, 6:12].min() == 255 and grid[5:].max() == 0
    assert pictures.image_grid(np.zeros((4, 5, 6, 1)), 2, 2).shape == (10, 12)


# --- An evaluator for one's own images -----------------------------------------------------------------


@pytest.fixture(scope="module")
def pets_evaluator(pets, tmp_path_factory) -> tuple[str, dict]:
    from gan_jax.evaluator import train as evaluator_train
    out = str(tmp_path_factory.mktemp("pets_evaluator"))
    record = evaluator_train.run("", pets, out, epochs=3, seed=0, batch_size=8, learning_rate=3e-3,
                                 date="2000-01-01", command="test", log=lambda line: None,
                                 source="folder")
    return out, record


def test_an_evaluator_trained_on_a_folder(pets_evaluator):
    from gan_jax import evaluator
    out, record = pets_evaluator
    assert sorted(os.listdir(out)) == ["custom.json", "custom.msgpack"]
    assert record["image_shape"] == [32, 32, 3] and record["num_classes"] == 2
    assert record["held_out"] == "test split" and record["test_accuracy"] == 1.0  # squares: easy
    loaded = evaluator.load_folder(out)
    assert loaded.image_shape == (32, 32, 3) and loaded.metadata == record
    assert loaded.logits(_pictures(3, 32, 3)).shape == (3, 2)


def test_without_a_test_split_a_tenth_of_train_is_held_out(tmp_path):
    from gan_jax.evaluator import train as evaluator_train
    path = str(tmp_path / "data.npz")
    np.savez(path, images=_pictures(40, 32, 1), labels=np.arange(40) % 2)
    record = evaluator_train.run("", path, str(tmp_path / "out"), epochs=1, seed=0, batch_size=8,
                                 learning_rate=3e-3, date="2000-01-01", command="test",
                                 log=lambda line: None, source="npz")
    assert record["held_out"].startswith("4 training images held out") and record["train_images"] == 36


def test_an_evaluator_needs_labels(tmp_path):
    from gan_jax.evaluator import train as evaluator_train
    path = str(tmp_path / "data.npz")
    np.savez(path, images=_pictures(10, 32, 1))
    with pytest.raises(DataError, match="has no labels: an evaluator learns classes"):
        evaluator_train.run("", path, str(tmp_path / "out"), 1, 0, 8, 1e-3, None, "test", source="npz")


def test_evaluating_a_run_on_ones_own_images(pets_run, pets_evaluator, tmp_path):
    from gan_jax.evaluate import evaluate
    _, workdir, _ = pets_run
    out, _ = pets_evaluator
    text, written = evaluate(workdir=workdir, num_samples=16, evaluator=out)
    with open(written[0]) as f:
        result = json.load(f)
    assert np.isfinite(result["fid"]) and 0 <= result["cond_acc"] <= 1
    assert len(result["class_histogram"]) == 2
    # Without an evaluator, one line says what it needs.
    with pytest.raises(UserError, match="no shipped evaluator for data.name='custom'"):
        evaluate(workdir=workdir, num_samples=16)
    # Samples scored against the evaluator's own data.
    np.save(tmp_path / "s.npy", _pictures(8, 32, 3))
    text, _ = evaluate(samples=str(tmp_path / "s.npy"), evaluator=out)
    assert "8 images" in text and "FID" in text and "at most 0.6931" in text  # log(2 classes)


def test_an_evaluator_of_another_image_shape_is_refused(pets_run, tmp_path):
    from gan_jax.evaluate import evaluate
    _, workdir, _ = pets_run
    mnist_like = str(tmp_path / "evaluator")
    os.makedirs(mnist_like)
    from gan_jax.evaluator import weights_files
    import importlib.resources
    for name in weights_files("mnist"):
        data = importlib.resources.files("gan_jax.evaluator").joinpath("weights", name).read_bytes()
        with open(os.path.join(mnist_like, name), "wb") as f:
            f.write(data)
    with pytest.raises(DataError, match="the evaluator takes 28x28x1 images, but the images of .* are "
                                        "32x32x3"):
        evaluate(workdir=workdir, num_samples=16, evaluator=mnist_like)


def test_the_flop_count_follows_the_image_shape():
    from gan_jax.model import flops
    config = folder_config("x", **{"data.image_size": 32, "data.channels": 3, "latent_dim": 100,
                                   "model.g_width": 64, "model.d_width": 64})
    g = [1 * 1 * 16 * 100 * 256,  # ConvT 100 -> 256, k4, on 1x1: 4x4
         4 * 4 * 16 * 256 * 128,  # -> 8x8
         8 * 8 * 16 * 128 * 64,  # -> 16x16
         16 * 16 * 16 * 64 * 3]  # -> 32x32x3
    d = [16 * 16 * 16 * 3 * 64,  # 32 -> 16
         8 * 8 * 16 * 64 * 128,  # -> 8
         4 * 4 * 16 * 128 * 256,  # -> 4
         4 * 4 * 256]  # the dense layer
    assert flops.network_macs(config) == {"generator": g, "discriminator": d}


def test_training_logs_the_scores_of_ones_own_evaluator(pets, pets_evaluator, tmp_path):
    from gan_jax.reporting.metrics_log import read_metrics
    from gan_jax.train import train_and_evaluate
    out, _ = pets_evaluator
    config = folder_config(pets, **{"eval_every": 2, "evaluator": out})
    train_and_evaluate(config, str(tmp_path / "run"))
    evaluated = [r for r in read_metrics(str(tmp_path / "run" / "metrics.jsonl")) if "eval_fid" in r]
    assert [r["step"] for r in evaluated] == [2] and np.isfinite(evaluated[0]["eval_fid"])
    # An evaluator of other images is refused before anything is written.
    gray = folder_config(pets, **{"eval_every": 2, "evaluator": out, "data.channels": 1})
    with pytest.raises(DataError, match="the evaluator takes 32x32x3 images, but the training images are "
                                        "32x32x1"):
        train_and_evaluate(gray, str(tmp_path / "gray"))
    assert not os.path.exists(tmp_path / "gray")


@pytest.mark.slow
def test_a_sweep_on_two_devices_at_32_pixels(pets, tmp_path):
    from gan_jax.sweep import run_sweep
    config = folder_config(pets, **{"num_devices": 2})
    states = run_sweep(config, str(tmp_path / "sweep"), seeds=[0, 1], vary={})
    assert [int(s.step) for s in states] == [2, 2]
    assert not trees_equal(states[0].generator.params, states[1].generator.params)
    with open(tmp_path / "sweep" / "run_001" / "config.json") as f:
        assert json.load(f)["data"]["image_size"] == 32
