"""Sample quality of a trained GAN: `python -m gan_jax.evaluate`, and the functions behind it.

    python -m gan_jax.evaluate --workdir runs/mnist [--num_samples 10000] [--step N] [--seed S] [--noema]
        [--json FILE]
    python -m gan_jax.evaluate --samples FILE.npy --dataset mnist [--data_dir DIR] [--json FILE]
    python -m gan_jax.evaluate --workdir runs/mnist_sweep [...]   # every run of a sweep, and per seed group

The first form restores a run's checkpoint (the latest, or `--step`), draws `--num_samples` images from
G in inference mode on noise from `--seed` (the EMA generator when the run keeps one; `--noema` for the
raw one), and scores them against the run's real test split; it also
measures D's accuracy on the test split against those samples, which is what the tutorial's "test"
meant to measure. It prints a table and writes `eval/step_XXXXXXX.json` in the workdir. The second
form scores any images: (N, 28, 28) or (N, 28, 28, 1), uint8 in [0, 255] or float in [-1, 1].

Every metric is computed with the shipped evaluator network of the dataset (`gan_jax.evaluator`):

| key | what | better |
| --- | --- | --- |
| `fid` | Fréchet distance of evaluator features, samples vs the real test split | lower, 0 |
| `kid`, `kid_std` | kernel (MMD^2) distance of the same features, over random subsets | lower, ~0 |
| `score`, `score_std` | classifier score (Inception Score with the evaluator), at most 10 | higher |
| `precision`, `recall` | k-NN manifold fidelity of samples / coverage of the reals (k = 3) | higher, 1 |
| `coverage_entropy` | entropy of the predicted-class histogram, at most log(10) = 2.303 | higher |
| `class_histogram` | samples per predicted class, 10 counts | even |
| `d_acc` | D's accuracy, real test images vs samples (checkpoints only) | 0.5: D is fooled |
| `cond_acc` | conditional runs and labelled samples: share classified as the class asked for | higher, at most `evaluator_accuracy` |
| `intra_fid`, `intra_fid_per_class` | the same: FID of each class's samples against its test images, their mean | lower, 0 |

The real side (evaluator features of the test split, their mean and covariance) is cached in the run's
folder (`gan_jax.reference`); the run and its networks are read back by `gan_jax.runs`; images and
labels from files are read and checked by `gan_jax.image_arrays`.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, Callable

import ml_collections
import numpy as np

from gan_jax import cli, files, sweep_report
from gan_jax import workdir as workdir_lib
from gan_jax import evaluator as evaluator_lib
from gan_jax import input_pipeline, metrics
from gan_jax.errors import DataError, UserError
from gan_jax.image_arrays import MIN_IMAGES, as_images, as_labels, load_images, load_labels
from gan_jax.input_pipeline import DATASETS
from gan_jax.reference import (EVAL_DIR, Reference, load_evaluator, reference_cache_path,
                               reference_statistics)
from gan_jax.runs import balanced_labels, discriminate, generate_images, latent_noise, load_run
from gan_jax.state import GAN, TrainState

DEFAULT_NUM_SAMPLES = 10_000
TRAINING_NUM_SAMPLES = 2_000  # during training: cheap enough to run every few thousand steps
KID_SUBSETS = 100
# 10 subsets instead of 100 during training: KID's mean stays unbiased, only noisier, at a tenth of
# its cost (about 0.6 s instead of 6 s on two CPU cores).
TRAINING_KID_SUBSETS = 10
SCORE_SPLITS = 10
METRIC_KEYS = ("fid", "kid", "kid_std", "score", "score_std", "precision", "recall", "coverage_entropy",
               "class_histogram", "d_acc")


# --- Metrics -------------------------------------------------------------------------------------------


def _score(evaluator: evaluator_lib.Evaluator, samples: np.ndarray, reference: Reference, *,
           full: bool = True, kid_subsets: int = KID_SUBSETS, labels: np.ndarray | None = None,
           real_labels: np.ndarray | None = None) -> dict[str, Any]:
    """The metrics of checked samples against a reference; `full=False` keeps fid, kid and score (and
    cond_acc) only. With the samples' `labels`, the conditional metrics too (see evaluate_samples)."""
    logits, features = evaluator.outputs(samples)
    probs = evaluator_lib.softmax(logits)
    conditional = {}
    if labels is not None:
        conditional["cond_acc"] = metrics.conditional_accuracy(probs, labels)
        if full:
            mean, per_class = metrics.intra_class_fid(features, labels, reference.features, real_labels,
                                                      probs.shape[1])
            conditional.update(intra_fid=mean, intra_fid_per_class=per_class,
                               evaluator_accuracy=evaluator.metadata.get("test_accuracy"))
    fid = metrics.frechet_distance(*metrics.feature_stats(features), *reference.stats)
    kid, kid_std = metrics.kid(reference.features, features, num_subsets=kid_subsets)
    score, score_std = metrics.classifier_score(probs, num_splits=min(SCORE_SPLITS, len(probs)))
    result = {"fid": fid, "kid": kid, "kid_std": kid_std, "score": score, "score_std": score_std}
    if full:
        precision, recall = metrics.precision_recall(reference.features, features, k=metrics.PR_NEIGHBOURS)
        coverage = metrics.class_coverage(probs)
        result.update(precision=precision, recall=recall, coverage_entropy=coverage.entropy,
                      class_histogram=[int(c) for c in coverage.counts])
    return {**result, **conditional}


def evaluate_samples(samples: np.ndarray, dataset: str, real_test_images: np.ndarray, *,
                     discriminator_logits: tuple[np.ndarray, np.ndarray] | None = None,
                     reference_cache: str | None = None, labels: np.ndarray | None = None,
                     real_test_labels: np.ndarray | None = None) -> dict[str, Any]:
    """Scores images against the real test split with the shipped evaluator of `dataset`.

    Args:
      samples: the images to score, (N, 28, 28[, 1]), uint8 in [0, 255] or float in [-1, 1]; N >= 4.
      dataset: "mnist" or "fashion_mnist": which evaluator, and what the real images are.
      real_test_images: the real test split, same layout and ranges.
      discriminator_logits: (logits on the real test images, logits on the samples) of a
        discriminator, to report its accuracy as `d_acc`.
      reference_cache: an .npz caching the real side (see `reference_statistics`); None: no cache.
      labels: the classes the samples were generated for (N,), for conditional samples; then
        `real_test_labels` (the test split's classes) are needed too.

    Returns:
      {"fid", "kid", "kid_std", "score", "score_std", "precision", "recall", "coverage_entropy":
      float, "class_histogram": 10 ints, "d_acc": float (with discriminator_logits only)}; with
      labels also "cond_acc" (share classified as their class), "intra_fid" (mean over classes of the
      FID between a class's samples and its test images), "intra_fid_per_class" (10 floats) and
      "evaluator_accuracy" (the evaluator's own test accuracy: the ceiling of cond_acc).

    Raises:
      UserError: unknown dataset, unfit images (wrong shape, type or range, fewer than 4), or labels
        that do not fit the images.
    """
    samples = as_images(samples, "samples")
    real_test_images = as_images(real_test_images, "real test images")
    if labels is not None:
        labels = as_labels(labels, len(samples), "labels")
        real_test_labels = as_labels(real_test_labels, len(real_test_images), "real test labels")
    evaluator = load_evaluator(dataset)
    reference = reference_statistics(evaluator, real_test_images, reference_cache)
    try:
        result = _score(evaluator, samples, reference, labels=labels, real_labels=real_test_labels)
    except ValueError as e:  # a class without enough samples for its FID
        raise DataError(f"cannot score these samples per class: {e}") from None
    if discriminator_logits is not None:
        result["d_acc"] = metrics.discriminator_accuracy(*discriminator_logits)
    return result


# --- Checkpoints ---------------------------------------------------------------------------------------


def eval_path(workdir: str, step: int, raw_of_ema_run: bool = False) -> str:
    """Where the evaluation of a run's checkpoint at `step` is written: step_XXXXXXX.json for the
    generator samples come from by default (the EMA one when the run keeps one), step_XXXXXXX_raw.json
    for the raw generator of a run that keeps an EMA (`--noema`)."""
    return os.path.join(workdir, EVAL_DIR, f"step_{step:07d}{'_raw' if raw_of_ema_run else ''}.json")


def evaluate_checkpoint(workdir: str, num_samples: int = DEFAULT_NUM_SAMPLES, step: int | None = None,
                        seed: int = 0, use_ema: bool = True) -> tuple[int, dict[str, Any], str]:
    """Evaluates a run's checkpoint and writes the result to `eval/step_XXXXXXX[_raw].json` (see
    `eval_path`).

    Draws `num_samples` images from G in inference mode on noise from `seed` (class-balanced for a
    conditional run: the classes in turn), scores them against the run's real test split
    (`evaluate_samples`, with the conditional metrics for a conditional run), and adds D's accuracy in
    inference mode on the whole test split against the same samples, images D never trained on on
    either side.

    Args:
      workdir: the run's folder.
      num_samples: how many images to draw, >= 4.
      step: the checkpoint's step; None for the latest.
      seed: seeds the noise; the same seed draws the same images.
      use_ema: sample from the EMA generator when the run keeps one; False for the raw generator.

    Returns:
      (the checkpoint's step, the metrics of `evaluate_samples` with "d_acc" and "generator", "ema"
      or "raw", the path of the JSON file written).

    Raises:
      UserError: no run or checkpoint, bad num_samples, or the test split cannot be loaded.
    """
    if num_samples < MIN_IMAGES:
        raise UserError(f"num_samples={num_samples}; at least {MIN_IMAGES} are needed")
    run = load_run(workdir, step)
    config = run.config
    num_classes = config.model.num_classes
    labels = balanced_labels(num_samples, num_classes) if num_classes else None
    fakes = generate_images(run.gan, run.generator_variables(use_ema),
                            latent_noise(seed, num_samples, config.latent_dim), labels)
    test = input_pipeline.load_split(config.data, "test")
    test_labels = test.labels.astype(np.int32) if num_classes else None
    logits = (discriminate(run.gan, run.state.discriminator, test.images, test_labels),
              discriminate(run.gan, run.state.discriminator, fakes, labels))
    result = evaluate_samples(fakes, config.data.name, test.images, discriminator_logits=logits,
                              reference_cache=reference_cache_path(run.workdir, config.data.name),
                              labels=labels, real_test_labels=test.labels if num_classes else None)
    result["generator"] = run.generator_name(use_ema)
    path = eval_path(run.workdir, run.step, raw_of_ema_run=result["generator"] != run.generator_name())
    files.write_json(path, {"step": run.step, "num_samples": num_samples, "seed": seed, **result})
    return run.step, result, path


def make_training_evaluator(config: ml_collections.ConfigDict, workdir: str,
                            num_samples: int = TRAINING_NUM_SAMPLES,
                            seed: int = 0) -> Callable[[TrainState], dict[str, float]]:
    """A cheap evaluation for the training loop: FID, KID and classifier score on fixed noise.

    The test split, the evaluator and the reference statistics (cached in the workdir) are loaded once,
    here; each call then costs G on `num_samples` noise vectors, one evaluator pass and the metrics.
    The noise is the same at every call, so the numbers follow the generator alone.

    Args:
      config: the run's config.
      workdir: the run's folder, where the reference statistics are cached.
      num_samples: images per evaluation, >= 4.
      seed: seeds the fixed noise.

    Returns:
      `evaluate(host_state) -> {"eval_fid", "eval_kid", "eval_score"}` (and "eval_cond_acc" for a
      conditional run, on class-balanced samples) of the raw generator, plus the same with "_ema" of
      the EMA generator when the state keeps one.
    """
    if num_samples < MIN_IMAGES:
        raise UserError(f"num_samples={num_samples}; at least {MIN_IMAGES} are needed")
    gan = GAN.from_config(config)
    evaluator = load_evaluator(config.data.name)
    test_images = as_images(input_pipeline.load_split(config.data, "test").images, "real test images")
    reference = reference_statistics(evaluator, test_images,
                                     reference_cache_path(os.path.abspath(workdir), config.data.name))
    noise = latent_noise(seed, num_samples, config.latent_dim)
    labels = balanced_labels(num_samples, config.model.num_classes) if config.model.num_classes else None
    names = ("fid", "kid", "score") + (("cond_acc",) if labels is not None else ())

    def evaluate(state: TrainState) -> dict[str, float]:
        generators = {"": state.sampling_variables(use_ema=False)}
        if state.generator_ema is not None:
            generators["_ema"] = state.sampling_variables(use_ema=True)
        record = {}
        for suffix, variables in generators.items():
            fakes = generate_images(gan, variables, noise, labels)
            result = _score(evaluator, fakes, reference, full=False, kid_subsets=TRAINING_KID_SUBSETS,
                            labels=labels)
            record.update({f"eval_{name}{suffix}": result[name] for name in names})
        return record

    return evaluate


# --- Command line --------------------------------------------------------------------------------------


def format_table(result: dict[str, Any]) -> str:
    """The metrics as an aligned, readable table."""
    rows = [("FID", f"{result['fid']:.4f}", "lower is better"),
            ("KID", f"{result['kid']:.5f} +- {result['kid_std']:.5f}", "lower is better, ~0 at best"),
            ("classifier score", f"{result['score']:.3f} +- {result['score_std']:.3f}", "higher, at most 10"),
            ("precision", f"{result['precision']:.4f}", "samples inside the real manifold"),
            ("recall", f"{result['recall']:.4f}", "reals inside the sample manifold"),
            ("class coverage entropy", f"{result['coverage_entropy']:.4f}", f"at most {math.log(10):.4f}")]
    if "d_acc" in result:
        rows.append(("D accuracy", f"{result['d_acc']:.4f}", "real test vs samples; 0.5 is chance"))
    if "cond_acc" in result:
        ceiling = result.get("evaluator_accuracy")
        rows.append(("conditional accuracy", f"{result['cond_acc']:.4f}", "classified as asked" + (
            f"; the evaluator's own test accuracy: {ceiling:.4f}" if ceiling else "")))
        rows.append(("intra-class FID", f"{result['intra_fid']:.4f}", "mean over classes of each "
                     "class's FID"))
    histogram = " ".join(f"{digit}:{count}" for digit, count in enumerate(result["class_histogram"]))
    rows.append(("class histogram", histogram, ""))
    if "intra_fid_per_class" in result:
        rows.append(("intra-class FIDs", " ".join(f"{c}:{fid:.1f}" for c, fid in
                                                  enumerate(result["intra_fid_per_class"])), ""))
    width = max(len(name) for name, _, _ in rows)
    value_width = max(len(value) for name, value, _ in rows if not name.startswith(("class hist",
                                                                                     "intra-class FIDs")))
    lines = [f"  {name:<{width}}  {value:<{value_width}}  {note}".rstrip() for name, value, note in rows]
    return "\n".join(lines)


def run(*, workdir: str | None = None, samples: str | None = None, dataset: str | None = None,
        data_dir: str | None = None, num_samples: int | None = None, step: int | None = None,
        seed: int | None = None, json_path: str | None = None, use_ema: bool = True,
        labels: str | None = None) -> int:
    """The command line's work, given its flags: prints the table, returns the exit status.

    Exactly one of `workdir` (evaluate a checkpoint) and `samples` (score a .npy of images) is given.
    Bad input prints one line "error: ..." on stderr and returns 1.
    """
    try:
        if (workdir is None) == (samples is None):
            raise UserError("give exactly one of --workdir (a training run) and --samples (a .npy file)")
        if labels and not samples:
            raise UserError("--labels goes with --samples: the classes of those images")
        if workdir is not None:
            if dataset is not None or data_dir is not None:
                raise UserError("--dataset and --data_dir go with --samples; a run's config names its data")
            num_samples = DEFAULT_NUM_SAMPLES if num_samples is None else num_samples
            seed = 0 if seed is None else seed
            sweep = workdir_lib.read_sweep(workdir)
            if sweep is not None:
                return _run_sweep(workdir, sweep, num_samples, step, seed, use_ema, json_path)
            step, result, path = evaluate_checkpoint(workdir, num_samples, step, seed, use_ema)
            header = (f"step {step} of {os.path.abspath(workdir)}: {num_samples} samples (seed {seed}) "
                      f"of the {result['generator']} generator against the real test split")
            record = {"step": step, "num_samples": num_samples, "seed": seed, **result}
            written = [path]
        else:
            if num_samples is not None or step is not None or seed is not None or not use_ema:
                raise UserError("--num_samples, --step, --seed and --noema go with --workdir, "
                                "not --samples")
            if dataset is None:
                raise UserError(f"--samples needs --dataset, one of {', '.join(DATASETS)}")
            if dataset not in DATASETS:
                raise UserError(f"--dataset={dataset!r}; expected one of {', '.join(DATASETS)}")
            images = load_images(samples)
            sample_labels = load_labels(labels) if labels else None
            data = ml_collections.ConfigDict({"source": "idx" if data_dir else "tfds", "name": dataset,
                                              "dir": data_dir or ""})
            test = input_pipeline.load_split(data, "test")
            result = evaluate_samples(images, dataset, test.images, labels=sample_labels,
                                      real_test_labels=test.labels if labels else None)
            header = f"{len(images)} images of {samples} against the {dataset} test split"
            record = {"num_samples": len(images), **result}
            written = []
        if json_path:
            files.write_json(json_path, record)
            written.append(json_path)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(header)
    print(format_table(result))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def evaluate_sweep(workdir: str, runs: list[dict], num_samples: int = DEFAULT_NUM_SAMPLES,
                   step: int | None = None, seed: int = 0,
                   use_ema: bool = True) -> tuple[list[dict], list[dict]]:
    """Evaluates every run of a sweep folder (`evaluate_checkpoint` on each run's folder).

    Returns:
      (rows, groups): one row per run ({"name", "seed", "values", "step", <metrics>...}) and the
      summary per group of seeds (`sweep_report.summarize`).
    """
    rows = []
    for run in runs:
        run_step, result, _ = evaluate_checkpoint(os.path.join(workdir, run["name"]), num_samples, step,
                                                  seed, use_ema)
        rows.append({"name": run["name"], "seed": run["seed"], "values": run["values"],
                     "step": run_step, **result})
    return rows, sweep_report.summarize(rows)


def _run_sweep(workdir, runs, num_samples, step, seed, use_ema, json_path) -> int:
    """The command line on a sweep folder: every run, then each group of seeds."""
    try:
        rows, groups = evaluate_sweep(workdir, runs, num_samples, step, seed, use_ema)
        if json_path:
            files.write_json(json_path, {"num_samples": num_samples, "seed": seed, "runs": rows,
                                         "groups": groups})
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"sweep {os.path.abspath(workdir)}: {len(rows)} runs, {num_samples} samples each (seed {seed}) "
          f"against the real test split")
    print(sweep_report.format_report(rows, groups))
    if json_path:
        print(f"wrote {json_path}", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    del argv  # cli.parse_flags refuses leftovers
    cli.setup_logging()
    f = _FLAGS
    return run(workdir=f.workdir, samples=f.samples, dataset=f.dataset, data_dir=f.data_dir,
               num_samples=f.num_samples, step=f.step, seed=f.seed, json_path=f.json, use_ema=f.ema,
               labels=f.labels)


def _define_flags():
    from absl import flags
    flags.DEFINE_string("workdir", None, "A training run's folder: evaluate its checkpoint.")
    flags.DEFINE_integer("step", None, "The checkpoint's step (default: the latest).")
    flags.DEFINE_integer("num_samples", None, f"Images to draw from G (default {DEFAULT_NUM_SAMPLES}).")
    flags.DEFINE_integer("seed", None, "Seeds the noise G draws from (default 0).")
    flags.DEFINE_bool("ema", True, "Sample from the EMA generator when the run keeps one (config."
                      "ema_decay > 0); --noema for the raw generator.")
    flags.DEFINE_string("samples", None, "A .npy of images to score instead: N x 28 x 28[ x 1], uint8 "
                        "in [0, 255] or float in [-1, 1].")
    flags.DEFINE_string("dataset", None, f"With --samples: whose evaluator and test split, one of "
                        f"{', '.join(DATASETS)}.")
    flags.DEFINE_string("data_dir", None, "With --samples: a folder of the dataset's IDX files "
                        "(default: tensorflow-datasets).")
    flags.DEFINE_string("labels", None, "With --samples: a .npy of the class each image was "
                        "generated for (N,), integers 0-9: adds the conditional metrics.")
    flags.DEFINE_string("json", None, "Also write the metrics to this file, as one JSON object.")
    return flags.FLAGS


if __name__ == "__main__":
    from absl import app
    cli.request_deterministic_xla()  # so an evaluation is repeatable on GPU too
    _FLAGS = _define_flags()
    app.run(main, flags_parser=cli.parse_flags)
