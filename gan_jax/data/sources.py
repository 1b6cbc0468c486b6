"""A split of the dataset a config names, from the source it names: `load_split(config.data, split)`.

Two sources give the same arrays: `idx` reads the four IDX files (gzip or raw) from a folder
(`gan_jax.data.idx`), `tfds` goes through tensorflow-datasets (`gan_jax.data.tfds_builders`).
"""

from __future__ import annotations

from gan_jax.data import idx
from gan_jax.errors import DataError


def load_split(data_config, split: str = "train", offline_hint: str | None = None) -> idx.Split:
    """Loads `split` ("train" or "test") of the dataset that `data_config` (the config's `data`) names.

    `offline_hint` is what a failed download tells the user to do instead (tfds; the default fits
    commands that read the config's data).
    """
    if data_config.source == "idx":
        if not data_config.dir:
            raise DataError("data.source='idx' needs data.dir, the folder holding the IDX files")
        loaded = idx.load_split(data_config.dir, split)
        # Files of the other dataset are a mistake either way; unknown ones only when asked to check.
        idx.check_canonical(loaded, data_config.name, split, data_config.dir,
                            allow_unknown=not data_config.check_dataset)
        return loaded
    from gan_jax.data import tfds_builders  # tensorflow-datasets is a heavy import: only when asked for
    hint = {} if offline_hint is None else {"offline_hint": offline_hint}
    return tfds_builders.load(data_config.name, split, data_dir=data_config.dir or None, **hint)


def check_labels(split: idx.Split, num_classes: int) -> None:
    """Refuses labels a conditional run cannot use: one outside [0, num_classes)."""
    if num_classes and len(split.labels) and int(split.labels.max()) >= num_classes:
        raise DataError(f"the data has label {int(split.labels.max())}, but model.num_classes is "
                        f"{num_classes}")
