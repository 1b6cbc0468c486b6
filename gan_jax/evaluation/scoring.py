"""Scoring a GAN's samples with an evaluator (the shipped one of the dataset, or one trained on a
user's own images): images against a real test split
(`evaluate_samples`), a run's checkpoint (`evaluate_checkpoint`), every run of a sweep
(`evaluate_sweep`), and the cheap evaluation the training loop runs every `eval_every` steps
(`make_training_evaluator`).

Every metric is computed in the evaluator network's feature space (`gan_jax.evaluator`); the metrics
themselves are `gan_jax.evaluation.quality`, the real side is cached by `gan_jax.evaluation.reference`,
and a run is read back by `gan_jax.evaluation.restored`. What each metric means: the README's
"Evaluating" section and `gan_jax/evaluate.py`.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import ml_collections
import numpy as np

from gan_jax import evaluator as evaluator_lib
from gan_jax import files
from gan_jax.data import idx, sources
from gan_jax.errors import DataError, UserError
from gan_jax.evaluation import quality, report
from gan_jax.evaluation.images import MIN_IMAGES, as_images, as_labels
from gan_jax.evaluation.reference import (EVAL_DIR, Reference, check_fits, load_evaluator,
                                          reference_cache_path, reference_statistics)
from gan_jax.evaluation.restored import load_run
from gan_jax.model import inference
from gan_jax.training.spec import GANSpec
from gan_jax.training.state import TrainState

DEFAULT_NUM_SAMPLES = 10_000
TRAINING_NUM_SAMPLES = 2_000  # during training: cheap enough to run every few thousand steps
KID_SUBSETS = 100
# 10 subsets instead of 100 during training: KID's mean stays unbiased, only noisier, at a tenth of
# its cost (about 0.6 s instead of 6 s on two CPU cores).
TRAINING_KID_SUBSETS = 10
SCORE_SPLITS = 10
METRIC_KEYS = ("fid", "kid", "kid_std", "score", "score_std", "precision", "recall", "coverage_entropy",
               "class_histogram", "d_acc")
# What `evaluate --workdir` tells the user when a run's real data cannot be read: its --data_dir,
# not the config keys a training command would take.
RUN_DATA_ADVICE = idx.Advice(other="but the run trained on {dataset}: point --data_dir at {dataset}'s "
                                   "files",
                             unknown="point --data_dir at {dataset}'s published files, which the run "
                                     "trained on")
RUN_OFFLINE_HINT = ("give --data_dir FOLDER: the dataset's IDX files, or the tensorflow-datasets folder "
                    "it was prepared in")


def _run_test_split(data: ml_collections.ConfigDict, data_dir: str | None) -> idx.Split:
    """The real test split of a run whose config's data is `data` (reading from `data_dir`, when
    given: `load_run` put it in data.dir).

    A run trained through tensorflow-datasets may be given the published IDX files instead: its
    builders decode those very files, so the arrays are the same, and offline they are what a user
    has. A run whose data is gone (moved, or evaluated on another machine) is told about --data_dir.
    """
    if data.source == "tfds" and data_dir and idx.has_split(data.dir, "test"):
        data = ml_collections.ConfigDict({**data.to_dict(), "source": "idx", "check_dataset": True})
    elif data.source != "tfds" and not data_dir and not os.path.exists(data.dir):
        raise DataError(f"the run's data {data.dir!r} does not exist any more; if it moved, give "
                        f"--data_dir with its new place")
    return sources.load_test_split(data, RUN_OFFLINE_HINT, RUN_DATA_ADVICE)


def _score(evaluator: evaluator_lib.Evaluator, samples: np.ndarray, reference: Reference, *,
           full: bool = True, kid_subsets: int = KID_SUBSETS, labels: np.ndarray | None = None,
           real_labels: np.ndarray | None = None) -> dict[str, Any]:
    """The metrics of checked samples against a reference; `full=False` keeps fid, kid and score (and
    cond_acc) only. With the samples' `labels`, the conditional metrics too (see evaluate_samples)."""
    logits, features = evaluator.outputs(samples)
    probs = evaluator_lib.softmax(logits)
    conditional = {}
    if labels is not None:
        conditional["cond_acc"] = quality.conditional_accuracy(probs, labels)
        if full:
            mean, per_class = quality.intra_class_fid(features, labels, reference.features, real_labels,
                                                      probs.shape[1])
            conditional.update(intra_fid=mean, intra_fid_per_class=per_class,
                               evaluator_accuracy=evaluator.metadata.get("test_accuracy"))
    fid = quality.frechet_distance(*quality.feature_stats(features), *reference.stats)
    kid, kid_std = quality.kid(reference.features, features, num_subsets=kid_subsets)
    score, score_std = quality.classifier_score(probs, num_splits=min(SCORE_SPLITS, len(probs)))
    result = {"fid": fid, "kid": kid, "kid_std": kid_std, "score": score, "score_std": score_std}
    if full:
        precision, recall = quality.precision_recall(reference.features, features, k=quality.PR_NEIGHBOURS)
        coverage = quality.class_coverage(probs, probs.shape[1])
        result.update(precision=precision, recall=recall, coverage_entropy=coverage.entropy,
                      class_histogram=[int(c) for c in coverage.counts])
    return {**result, **conditional}


def evaluate_samples(samples: np.ndarray, dataset: str, real_test_images: np.ndarray, *,
                     discriminator_logits: tuple[np.ndarray, np.ndarray] | None = None,
                     reference_cache: str | None = None, labels: np.ndarray | None = None,
                     real_test_labels: np.ndarray | None = None, evaluator_dir: str = "") -> dict[str, Any]:
    """Scores images against the real test split with the evaluator of `dataset`.

    Args:
      samples: the images to score, (N, H, W[, C]) of the evaluator's shape (28x28x1 for the shipped
        ones), uint8 in [0, 255] or float in [-1, 1]; N >= 4.
      dataset: "mnist" or "fashion_mnist": which shipped evaluator, and what the real images are
        (any name with `evaluator_dir`).
      real_test_images: the real test split, same layout and ranges.
      discriminator_logits: (logits on the real test images, logits on the samples) of a
        discriminator, to report its accuracy as `d_acc`.
      reference_cache: an .npz caching the real side (see `reference_statistics`); None: no cache.
      labels: the classes the samples were generated for (N,), for conditional samples; then
        `real_test_labels` (the test split's classes) are needed too.
      evaluator_dir: an evaluator trained on the user's images (`python -m gan_jax.evaluator.train`)
        instead of the shipped one.

    Returns:
      {"fid", "kid", "kid_std", "score", "score_std", "precision", "recall", "coverage_entropy":
      float, "class_histogram": one int per class, "d_acc": float (with discriminator_logits only)}; with
      labels also "cond_acc" (share classified as their class), "intra_fid" (mean over classes of the
      FID between a class's samples and its test images), "intra_fid_per_class" (10 floats) and
      "evaluator_accuracy" (the evaluator's own test accuracy: the ceiling of cond_acc).

    Raises:
      UserError: unknown dataset, unfit images (wrong shape, type or range, fewer than 4), or labels
        that do not fit the images.
    """
    evaluator = load_evaluator(dataset, evaluator_dir)
    shape, classes = evaluator.image_shape, evaluator.num_classes
    samples = as_images(samples, "samples", shape=shape)
    real_test_images = as_images(real_test_images, "real test images", shape=shape)
    if labels is not None:
        labels = as_labels(labels, len(samples), "labels", classes)
        real_test_labels = as_labels(real_test_labels, len(real_test_images), "real test labels", classes)
    reference = reference_statistics(evaluator, real_test_images, reference_cache)
    try:
        result = _score(evaluator, samples, reference, labels=labels, real_labels=real_test_labels)
    except ValueError as e:  # a class without enough samples for its FID
        raise DataError(f"cannot score these samples per class: {e}") from None
    if discriminator_logits is not None:
        result["d_acc"] = quality.discriminator_accuracy(*discriminator_logits)
    return result


def eval_path(workdir: str, step: int, raw_of_ema_run: bool = False) -> str:
    """Where the evaluation of a run's checkpoint at `step` is written: step_XXXXXXX.json for the
    generator samples come from by default (the EMA one when the run keeps one), step_XXXXXXX_raw.json
    for the raw generator of a run that keeps an EMA (`--noema`)."""
    return os.path.join(workdir, EVAL_DIR, f"step_{step:07d}{'_raw' if raw_of_ema_run else ''}.json")


def evaluate_checkpoint(workdir: str, num_samples: int = DEFAULT_NUM_SAMPLES, step: int | None = None,
                        seed: int = 0, use_ema: bool = True, data_dir: str | None = None,
                        evaluator_dir: str | None = None) -> tuple[int, dict[str, Any], str]:
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
      data_dir: where the run's data (its test split) is now, if it moved; for a run trained
        through tensorflow-datasets also a folder of the dataset's published IDX files.
      evaluator_dir: the evaluator to score with, instead of the run's (`config.evaluator`, else the
        shipped one of its dataset).

    Returns:
      (the checkpoint's step, the metrics of `evaluate_samples` with "d_acc" and "generator", "ema"
      or "raw", the path of the JSON file written).

    Raises:
      UserError: no run or checkpoint, bad num_samples, or the test split cannot be loaded.
    """
    if num_samples < MIN_IMAGES:
        raise UserError(f"num_samples={num_samples}; at least {MIN_IMAGES} are needed")
    run = load_run(workdir, step, data_dir)
    config = run.config
    evaluator_dir = config.evaluator if evaluator_dir is None else evaluator_dir
    check_fits(load_evaluator(config.data.name, evaluator_dir), run.spec.image_shape,
               f"the images of {run.workdir}")
    num_classes = config.model.num_classes
    labels = run.generator_labels(num_samples)
    fakes = inference.generate_images(run.spec.generator, run.generator_variables(use_ema),
                                      inference.latent_noise(seed, num_samples, config.latent_dim),
                                      labels)
    test = _run_test_split(config.data, data_dir)
    logits = None
    if run.state.clusters is None:  # a self-conditioned D needs each test image's cluster: none
        test_labels = test.labels.astype(np.int32) if num_classes else None
        d_variables = run.state.discriminator.variables()
        logits = (inference.discriminate(run.spec.discriminator, d_variables, test.images, test_labels),
                  inference.discriminate(run.spec.discriminator, d_variables, fakes, labels))
    result = evaluate_samples(fakes, config.data.name, test.images, discriminator_logits=logits,
                              reference_cache=reference_cache_path(run.workdir, config.data.name),
                              labels=labels if num_classes else None,
                              real_test_labels=test.labels if num_classes else None,
                              evaluator_dir=evaluator_dir)
    result["generator"] = run.generator_name(use_ema)
    path = eval_path(run.workdir, run.step, raw_of_ema_run=result["generator"] != run.generator_name())
    files.write_json(path, {"step": run.step, "num_samples": num_samples, "seed": seed, **result})
    return run.step, result, path


def make_training_evaluator(config: ml_collections.ConfigDict, workdir: str,
                            num_samples: int = TRAINING_NUM_SAMPLES,
                            seed: int = 0) -> Callable[[TrainState], dict[str, float]]:
    """A cheap evaluation for the training loop: FID, KID and classifier score on fixed noise.

    The test split, the evaluator and the reference statistics (cached in the workdir) are loaded once,
    here; each call then costs G on `num_samples` noise vectors, one evaluator pass and the quality.
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
    spec = GANSpec.from_config(config)
    generator = spec.generator
    evaluator = load_evaluator(config.data.name, config.evaluator)
    check_fits(evaluator, spec.image_shape, f"the images of {workdir}")
    test_images = as_images(sources.load_test_split(config.data).images, "real test images",
                            shape=evaluator.image_shape)
    reference = reference_statistics(evaluator, test_images,
                                     reference_cache_path(os.path.abspath(workdir), config.data.name))
    noise = inference.latent_noise(seed, num_samples, config.latent_dim)
    labels = (inference.balanced_labels(num_samples, config.model.num_classes)
              if config.model.num_classes else None)
    names = ("fid", "kid", "score") + (("cond_acc",) if labels is not None else ())

    def evaluate(state: TrainState) -> dict[str, float]:
        generators = {"": state.sampling_variables(use_ema=False)}
        if state.generator_ema is not None:
            generators["_ema"] = state.sampling_variables(use_ema=True)
        # A self-conditioned G draws its clusters in their current proportions.
        g_labels = labels if state.clusters is None else inference.share_labels(state.clusters.counts,
                                                                                num_samples)
        record = {}
        for suffix, variables in generators.items():
            fakes = inference.generate_images(generator, variables, noise, g_labels)
            result = _score(evaluator, fakes, reference, full=False, kid_subsets=TRAINING_KID_SUBSETS,
                            labels=labels)
            record.update({f"eval_{name}{suffix}": result[name] for name in names})
        return record

    return evaluate


def evaluate_sweep(workdir: str, runs: list[dict], num_samples: int = DEFAULT_NUM_SAMPLES,
                   step: int | None = None, seed: int = 0, use_ema: bool = True,
                   data_dir: str | None = None,
                   evaluator_dir: str | None = None) -> tuple[list[dict], list[dict]]:
    """Evaluates every run of a sweep folder (`evaluate_checkpoint` on each run's folder).

    Returns:
      (rows, groups): one row per run ({"name", "seed", "values", "step", <metrics>...}) and the
      summary per group of seeds (`report.summarize`).
    """
    rows = []
    for run in runs:
        run_step, result, _ = evaluate_checkpoint(os.path.join(workdir, run["name"]), num_samples, step,
                                                  seed, use_ema, data_dir, evaluator_dir)
        rows.append({"name": run["name"], "seed": run["seed"], "values": run["values"],
                     "step": run_step, **result})
    return rows, report.summarize(rows)
