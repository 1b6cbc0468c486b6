"""A split of the dataset a config names, from the source it names: `load_split(config.data, split)`.

Four sources give the same uint8 (N, H, W, C) images and (N,) labels: `idx` reads the four IDX files
(gzip or raw) of MNIST or Fashion-MNIST from a folder (`gan_jax.data.idx`), `tfds` goes through
tensorflow-datasets (`gan_jax.data.tfds_builders`), `folder` and `npz` read a user's own images
(`gan_jax.data.images`). A split without labels (an unlabelled folder) has labels of length 0.
"""

from __future__ import annotations

from gan_jax.data import idx, images
from gan_jax.errors import DataError


def load_split(data_config, split: str = "train", offline_hint: str | None = None,
               advice: idx.Advice = idx.TRAINING_ADVICE) -> idx.Split | None:
    """Loads `split` ("train" or "test") of the dataset that `data_config` (the config's `data`) names.

    `offline_hint` is what a failed download tells the user to do instead (tfds), `advice` what a
    refusal of another dataset's IDX files does (idx); the defaults fit commands that read the
    config's data. A folder or npz without a test split gives None for it.
    """
    source = data_config.source
    if source in ("idx", "folder", "npz") and not data_config.dir:
        raise DataError(f"data.source={source!r} needs data.dir")
    if source == "idx":
        loaded = idx.load_split(data_config.dir, split)
        # Files of the other dataset are a mistake either way; unknown ones only when asked to check.
        if data_config.name != "custom":
            idx.check_canonical(loaded, data_config.name, split, data_config.dir,
                                allow_unknown=not data_config.check_dataset, advice=advice)
        return loaded
    if source == "folder":
        return images.load_folder_split(data_config.dir, split, data_config.channels,
                                        data_config.image_size)
    if source == "npz":
        loaded = images.load_npz_split(data_config.dir, split)
        if loaded is None:
            return None
        return images.convert(loaded, data_config.channels, data_config.image_size, data_config.dir)
    from gan_jax.data import tfds_builders  # tensorflow-datasets is a heavy import: only when asked for
    hint = {} if offline_hint is None else {"offline_hint": offline_hint}
    return tfds_builders.load(data_config.name, split, data_dir=data_config.dir or None, **hint)


def load_test_split(data_config, offline_hint: str | None = None,
                    advice: idx.Advice = idx.TRAINING_ADVICE) -> idx.Split:
    """The split evaluations compare with: the test split, or, for a folder or npz without one, the
    training split itself (as FID is often measured against the training images)."""
    return (load_split(data_config, "test", offline_hint, advice) or
            load_split(data_config, "train", offline_hint, advice))


def check_images(split: idx.Split, sizes: tuple[int, ...], where: str) -> None:
    """Refuses images the networks cannot take: not square, or a side that is not one of `sizes`."""
    height, width = split.images.shape[1:3]
    if height != width or height not in sizes:
        raise DataError(f"{where}: the images are {width}x{height}; the networks take square images "
                        f"of {', '.join(map(str, sizes))} pixels (set config.data.image_size to resize "
                        f"a folder's or an npz's)")


def check_labels(split: idx.Split, num_classes: int, own_data: bool = False) -> None:
    """Refuses labels a conditional run cannot use: none, one outside [0, num_classes), or, for one's
    own data (`own_data`), classes that are not exactly num_classes (G would be asked for classes the
    data lacks)."""
    if not num_classes:
        return
    if not len(split.labels):
        raise DataError(f"model.num_classes={num_classes} needs labels, and the data has none (a folder "
                        f"without class folders, an npz without 'labels')")
    if int(split.labels.max()) >= num_classes:
        raise DataError(f"the data has label {int(split.labels.max())}, but model.num_classes is "
                        f"{num_classes}")
    if own_data and int(split.labels.max()) + 1 != num_classes:
        raise DataError(f"the data has {int(split.labels.max()) + 1} classes, but model.num_classes is "
                        f"{num_classes}")
