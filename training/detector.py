"""Fine-tuning the face detector: SSD loss with hard negative mining on augmented crops, one checkpoint per epoch."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from model.ssd import TunedFaceDetector
from training.config import DetectorConfig
from training.data import Image, detector_batch
from training.progress import last_figures, save_figures

logger = logging.getLogger(__name__)

NEGATIVES_PER_POSITIVE = 3
MIN_NEGATIVES = 16


def ssd_loss(
    logits: tf.Tensor, loc: tf.Tensor, labels: tf.Tensor, offsets: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """(classification, localisation) losses per positive anchor: softmax cross-entropy over positives and the
    hardest negatives (3 per positive, at least 16 an image), smooth L1 over positives."""
    positive = labels == 1
    negative = labels == 0
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.maximum(labels, 0), logits=logits)
    neg_ce = tf.where(negative, ce, -1.0)
    rank = tf.argsort(tf.argsort(neg_ce, axis=1, direction="DESCENDING"), axis=1)
    num_pos = tf.reduce_sum(tf.cast(positive, tf.int32), axis=1, keepdims=True)
    num_neg = tf.reduce_sum(tf.cast(negative, tf.int32), axis=1, keepdims=True)
    keep_neg = tf.minimum(tf.maximum(NEGATIVES_PER_POSITIVE * num_pos, MIN_NEGATIVES), num_neg)
    hard = negative & (rank < keep_neg)
    total_pos = tf.maximum(tf.cast(tf.reduce_sum(num_pos), tf.float32), 1.0)
    cls_loss = tf.reduce_sum(tf.where(positive | hard, ce, 0.0)) / total_pos
    smooth = tf.reduce_sum(_smooth_l1(loc - offsets), axis=-1)
    loc_loss = tf.reduce_sum(tf.where(positive, smooth, 0.0)) / total_pos
    return cls_loss, loc_loss


def _smooth_l1(x: tf.Tensor) -> tf.Tensor:
    a = tf.abs(x)
    return tf.where(a < 1.0, 0.5 * a * a, a - 0.5)


def train_detector(
    detector: TunedFaceDetector,
    images: Sequence[Image],
    config: DetectorConfig,
    checkpoint_dir: Path,
    resume: bool,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Train in place; a checkpoint after every epoch; with `resume`, carry on from the latest one. The
    augmentation of epoch e draws from a generator seeded with (seed, e), so a resumed run repeats the same data."""
    import tf_keras

    steps_per_epoch = max(1, len(images) // config.batch_size)
    schedule = tf_keras.optimizers.schedules.CosineDecay(config.learning_rate, config.epochs * steps_per_epoch, alpha=0.05)
    optimizer = tf_keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    variables = detector.trainable_variables
    ckpt = tf.train.Checkpoint(detector=detector, optimizer=optimizer, epoch=epoch)
    manager = tf.train.CheckpointManager(ckpt, str(checkpoint_dir), max_to_keep=2)
    optimizer.build(variables)  # slots exist before a restore fills them
    if resume and manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        logger.info("detector resumed checkpoint=%s epoch=%d", manager.latest_checkpoint, int(epoch.numpy()))
    _, _, priors = detector.heads(tf.zeros([1, config.crop, config.crop, 3]))

    @tf.function(reduce_retracing=True)
    def step(blobs: tf.Tensor, labels: tf.Tensor, offsets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            loc, logits, _ = detector.heads(blobs, training=True)
            cls_loss, loc_loss = ssd_loss(logits, loc, labels, offsets)
            loss = cls_loss + loc_loss
        grads = tape.gradient(loss, variables)
        grads, _ = tf.clip_by_global_norm(grads, 10.0)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return cls_loss, loc_loss

    figures: dict[str, float] = last_figures(checkpoint_dir)
    while int(epoch.numpy()) < config.epochs:
        e = int(epoch.numpy())
        rng = np.random.default_rng([config.seed, e])
        order = rng.permutation(len(images))
        started = time.monotonic()
        sums = np.zeros(2)
        for k in range(steps_per_epoch):
            idx = order[k * config.batch_size : (k + 1) * config.batch_size].tolist()
            blobs, labels, offsets = detector_batch(images, idx, rng, config.crop, priors, config.scale_range)
            c, lo = step(tf.constant(blobs), tf.constant(labels), tf.constant(offsets))
            sums += (float(c), float(lo))
        epoch.assign_add(1)
        manager.save()
        figures = {"cls_loss": sums[0] / steps_per_epoch, "loc_loss": sums[1] / steps_per_epoch}
        logger.info(
            "detector epoch=%d/%d cls_loss=%.4f loc_loss=%.4f seconds=%.0f",
            e + 1,
            config.epochs,
            figures["cls_loss"],
            figures["loc_loss"],
            time.monotonic() - started,
        )
        save_figures(checkpoint_dir, e + 1, figures)
        if on_epoch is not None:
            on_epoch(e + 1, figures)
    return figures

