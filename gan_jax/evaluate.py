"""`python -m gan_jax.evaluate`: the sample quality of a trained GAN, or of any images.

    python -m gan_jax.evaluate --workdir runs/mnist [--num_samples 10000] [--step N] [--seed S] [--noema]
        [--data_dir DIR] [--evaluator EVALUATOR] [--json FILE]
    python -m gan_jax.evaluate --samples FILE.npy --dataset mnist [--data_dir DIR] [--json FILE]
    python -m gan_jax.evaluate --samples FILE.npy --evaluator EVALUATOR [--data_dir DIR] [--json FILE]
    python -m gan_jax.evaluate --workdir runs/mnist_sweep [...]   # every run of a sweep, and per seed group

The first form restores a run's checkpoint (the latest, or `--step`), draws `--num_samples` images from
G in inference mode on noise from `--seed` (the EMA generator when the run keeps one; `--noema` for the
raw one), and scores them against the run's real test split; it also
measures D's accuracy on the test split against those samples, which is what the tutorial's "test"
meant to measure. It prints a table and writes `eval/step_XXXXXXX.json` in the workdir. The second
form scores any images: (N, 28, 28) or (N, 28, 28, 1), uint8 in [0, 255] or float in [-1, 1]; the third
any images of the shape an evaluator trained on one's own images takes, against that evaluator's data
(or `--data_dir`).

Every metric is computed with an evaluator network (`gan_jax.evaluator`): the shipped one of the
dataset, or for one's own images the one `python -m gan_jax.evaluator.train` trained on them
(`--evaluator`, or the run's `config.evaluator`). Without a test split the real side is the training
split.

| key | what | better |
| --- | --- | --- |
| `fid` | Fréchet distance of evaluator features, samples vs the real test split | lower, 0 |
| `kid`, `kid_std` | kernel (MMD^2) distance of the same features, over random subsets | lower, ~0 |
| `score`, `score_std` | classifier score (Inception Score with the evaluator), at most the number of classes | higher |
| `precision`, `recall` | k-NN manifold fidelity of samples / coverage of the reals (k = 3) | higher, 1 |
| `coverage_entropy` | entropy of the predicted-class histogram, at most log(classes) (2.303 for 10) | higher |
| `class_histogram` | samples per predicted class, one count per class | even |
| `d_acc` | D's accuracy, real test images vs samples (checkpoints only) | 0.5: D is fooled |
| `cond_acc` | conditional runs and labelled samples: share classified as the class asked for | higher, at most `evaluator_accuracy` |
| `intra_fid`, `intra_fid_per_class` | the same: FID of each class's samples against its test images, their mean | lower, 0 |

KID is the squared MMD of the features, as computed (not scaled by 1000, as some papers print it).
The real side (evaluator features of the test split, their mean and covariance) is cached in the run's
folder (`gan_jax.evaluation.reference`); the scoring is `gan_jax.evaluation.scoring`.
"""


from __future__ import annotations

import os
import sys

import ml_collections
from absl import flags

from gan_jax import cli, files
from gan_jax.config import KNOWN_DATASETS
from gan_jax.data import idx, sources
from gan_jax.errors import UserError
from gan_jax.evaluation import report
from gan_jax.evaluation.images import load_images, load_labels
from gan_jax.evaluation.reference import load_evaluator
from gan_jax.evaluation.scoring import (DEFAULT_NUM_SAMPLES, evaluate_checkpoint, evaluate_samples,
                                        evaluate_sweep)
from gan_jax.training.runs import read_sweep

# How a refusal of --data_dir's files ends, in this command's flags (the IDX reader's default names
# the config's keys, which --samples does not have).
SAMPLES_DATA_ADVICE = idx.Advice(other="but --dataset={dataset}: give --dataset={other} or point "
                                       "--data_dir at {dataset}'s files",
                                 unknown="point --data_dir at {dataset}'s published files")


def evaluate(*, workdir: str | None = None, samples: str | None = None, dataset: str | None = None,
             data_dir: str | None = None, num_samples: int | None = None, step: int | None = None,
             seed: int | None = None, json_path: str | None = None, use_ema: bool = True,
             labels: str | None = None, evaluator: str | None = None) -> tuple[str, list[str]]:
    """The command's work, given its flags: evaluates, writes the JSON files; returns the report and
    the files written.

    Exactly one of `workdir` (evaluate a checkpoint, or every run of a sweep) and `samples` (score a
    .npy of images) is given.

    Raises:
      UserError: flags that do not go together, or bad runs, files or data.
    """
    if (workdir is None) == (samples is None):
        raise UserError("give exactly one of --workdir (a training run) and --samples (a .npy file)")
    if labels and not samples:
        raise UserError("--labels goes with --samples: the classes of those images")
    if workdir is not None:
        if dataset is not None:
            raise UserError("--dataset goes with --samples; a run's config names its dataset")
        return _evaluate_run(workdir, DEFAULT_NUM_SAMPLES if num_samples is None else num_samples,
                             step, 0 if seed is None else seed, use_ema, data_dir, json_path, evaluator)
    if num_samples is not None or step is not None or seed is not None or not use_ema:
        raise UserError("--num_samples, --step, --seed and --noema go with --workdir, not --samples")
    if (dataset is None) == (evaluator is None):
        raise UserError(f"--samples needs one of --dataset ({', '.join(KNOWN_DATASETS)}: the shipped "
                        f"evaluator) and --evaluator (one trained on your images)")
    if dataset is not None and dataset not in KNOWN_DATASETS:
        raise UserError(f"--dataset={dataset!r}; expected one of {', '.join(KNOWN_DATASETS)} (for your "
                        f"own images: --evaluator)")
    scorer = load_evaluator(dataset or "", evaluator or "")
    images = load_images(samples, scorer.image_shape)
    sample_labels = load_labels(labels) if labels else None
    test = sources.load_test_split(_real_data(scorer, dataset, data_dir),
                                   offline_hint="give --data_dir FOLDER, the folder of the dataset's IDX "
                                                "files", advice=SAMPLES_DATA_ADVICE)
    result = evaluate_samples(images, scorer.dataset, test.images, labels=sample_labels,
                              real_test_labels=test.labels if labels else None,
                              evaluator_dir=evaluator or "")
    if json_path:
        files.write_json(json_path, {"num_samples": len(images), **result})
    return (f"{len(images)} images of {samples} against the {scorer.dataset} test split\n"
            f"{report.format_table(result)}", [json_path] if json_path else [])


def _real_data(scorer, dataset: str | None, data_dir: str | None) -> ml_collections.ConfigDict:
    """The data the samples are compared with: a shipped dataset's test split (IDX files in
    `data_dir`, else tensorflow-datasets), or the data the evaluator was trained on (moved to
    `data_dir`, if given)."""
    if dataset is not None:
        return ml_collections.ConfigDict({
            "source": "idx" if data_dir else "tfds", "name": dataset, "dir": data_dir or "",
            "check_dataset": False, "image_size": 0, "channels": 0})
    data = scorer.metadata.get("data")
    if data is None:  # trained on IDX files: the folder is not recorded, only their hashes
        if not data_dir:
            raise UserError(f"this evaluator was trained on {scorer.dataset}'s IDX files: give --data_dir, "
                            f"their folder")
        data = {"source": "idx", "dir": data_dir, "image_size": 0, "channels": 0}
    data = ml_collections.ConfigDict({**data, "name": scorer.dataset, "check_dataset": False})
    if data_dir:
        data.dir = os.path.abspath(data_dir)
    return data


def _evaluate_run(workdir, num_samples, step, seed, use_ema, data_dir, json_path,
                  evaluator) -> tuple[str, list[str]]:
    """A run's checkpoint, or (a sweep's folder) every run's and each group of seeds."""
    sweep = read_sweep(workdir)
    if sweep is not None:
        rows, groups = evaluate_sweep(workdir, sweep, num_samples, step, seed, use_ema, data_dir,
                                      evaluator)
        if json_path:
            files.write_json(json_path, {"num_samples": num_samples, "seed": seed, "runs": rows,
                                         "groups": groups})
        return (f"sweep {os.path.abspath(workdir)}: {len(rows)} runs, {num_samples} samples each (seed "
                f"{seed}) against the real test split\n{report.format_report(rows, groups)}",
                [json_path] if json_path else [])
    step, result, path = evaluate_checkpoint(workdir, num_samples, step, seed, use_ema, data_dir,
                                             evaluator)
    if json_path:
        files.write_json(json_path, {"step": step, "num_samples": num_samples, "seed": seed, **result})
    return (f"step {step} of {os.path.abspath(workdir)}: {num_samples} samples (seed {seed}) of the "
            f"{result['generator']} generator against the real test split\n{report.format_table(result)}",
            [path] + ([json_path] if json_path else []))


def main(argv: list[str]) -> int:
    del argv  # cli.parse_flags refuses leftovers
    cli.setup_logging()
    f = flags.FLAGS

    def body() -> None:
        text, written = evaluate(workdir=f.workdir, samples=f.samples, dataset=f.dataset,
                                 data_dir=f.data_dir, num_samples=f.num_samples, step=f.step, seed=f.seed,
                                 json_path=f.json, use_ema=f.ema, labels=f.labels,
                                 evaluator=f.evaluator)
        print(text)
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
    return cli.run(body)


def _define_flags() -> None:
    flags.DEFINE_string("workdir", None, "A training run's folder: evaluate its checkpoint.")
    flags.DEFINE_integer("step", None, "The checkpoint's step (default: the latest).")
    flags.DEFINE_integer("num_samples", None, f"Images to draw from G (default {DEFAULT_NUM_SAMPLES}).")
    flags.DEFINE_integer("seed", None, "Seeds the noise G draws from (default 0).")
    flags.DEFINE_bool("ema", True, "Sample from the EMA generator when the run keeps one (config."
                      "ema_decay > 0); --noema for the raw generator.")
    flags.DEFINE_string("samples", None, "A .npy of images to score instead: N x 28 x 28[ x 1] (or the "
                        "shape --evaluator takes), uint8 in [0, 255] or float in [-1, 1].")
    flags.DEFINE_string("dataset", None, f"With --samples: whose shipped evaluator and test split, one "
                        f"of {', '.join(KNOWN_DATASETS)}.")
    flags.DEFINE_string("evaluator", None, "An evaluator trained on your images (python -m "
                        "gan_jax.evaluator.train --out EVALUATOR): score with it instead of the "
                        "shipped one (with --workdir: instead of the run's config.evaluator).")
    flags.DEFINE_string("data_dir", None, "With --samples: the data to score against (the folder of "
                        "the dataset's IDX files; default tensorflow-datasets, or the evaluator's "
                        "data); with --workdir: where a run's data is now, if it moved (for a run "
                        "trained through tensorflow-datasets, also the folder of the dataset's IDX "
                        "files).")
    flags.DEFINE_string("labels", None, "With --samples: a .npy of the class each image was "
                        "generated for (N,), integers: adds the conditional metrics.")
    flags.DEFINE_string("json", None, "Also write the metrics to this file, as one JSON object.")


def run_from_command_line() -> None:
    """`python -m gan_jax.evaluate` and the console script `gan-jax-evaluate`."""
    cli.start(main, _define_flags, deterministic=True)


if __name__ == "__main__":
    run_from_command_line()
