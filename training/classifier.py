"""Fine-tuning the 3-class mask classifier from the pre-trained H5's MobileNetV2 on face patches, one checkpoint
per epoch: jittered context crops, flips, brightness/contrast, class weights for the rare classes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from model.tuned import FACE_LAYER
from training.config import ClassifierConfig
from training.data import class_weights, jittered_windows
from training.progress import last_figures, save_figures

logger = logging.getLogger(__name__)

BN_MOMENTUM = 0.9


def init_from_h5(model: Any, h5_model: Any) -> int:
    """Copy every layer of the pre-trained classifier whose name and shapes match (MobileNetV2, dense 128); its
    2-way output layer seeds the first two of the 3 outputs (same order: with_mask, without_mask). Returns the
    number of layers copied."""
    theirs = {layer.name: layer for layer in h5_model.layers}
    copied = 0
    for layer in model.layers:
        src = theirs.get(layer.name)
        if src is None or not layer.weights:
            continue
        mine, other = layer.get_weights(), src.get_weights()
        if [w.shape for w in mine] == [w.shape for w in other]:
            layer.set_weights(other)
            copied += 1
        elif layer.name == "dense_1" and len(mine) == len(other) == 2 and mine[0].shape[0] == other[0].shape[0]:
            kernel, bias = mine
            n = other[0].shape[1]
            kernel[:, :n], bias[:n] = other[0], other[1]
            layer.set_weights([kernel, bias])
            copied += 1
    return copied


def quicken_batchnorm(model: Any, momentum: float = BN_MOMENTUM) -> int:
    """Let every BatchNormalization layer's moving statistics follow the batches at `momentum`. MobileNetV2 keeps
    them at 0.999: over a few hundred fine-tuning steps at 96 px they stay near the 224 px ImageNet statistics, the
    served (inference-mode) model then differs from the trained one and runs with different seeds disagree
    widely. Returns the number of layers changed."""
    import tf_keras

    changed = 0
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            layer.momentum = momentum
            changed += 1
    return changed


def crops(patches: np.ndarray, windows: np.ndarray, size: int) -> tf.Tensor:
    """Crops [B,size,size,3] float 0..255 of patches [B,P,P,3] uint8 at windows [B,4] normalised (y0, x0, y1, x1),
    with samples at pixel centres as the served graph's crop_and_resize takes them."""
    p = patches.shape[1]
    # crop_and_resize maps 0..1 to the first..last pixel centre; windows are in edge coordinates
    first = windows[:, :2] * p / (p - 1) - 0.5 / (p - 1) + (windows[:, 2:] - windows[:, :2]) * p / size / 2 / (p - 1)
    last = first + (windows[:, 2:] - windows[:, :2]) * p * (size - 1) / size / (p - 1)
    boxes = np.concatenate([first, last], axis=-1).astype(np.float32)
    return tf.image.crop_and_resize(
        tf.cast(patches, tf.float32), boxes, tf.range(len(patches)), [size, size], method="bilinear"
    )


def augment(x: tf.Tensor, rng: np.random.Generator) -> tf.Tensor:
    """Random horizontal flips, contrast 0.75-1.3, brightness +-30, colour saturation 0.6-1.4 (drawn from rng)."""
    n = int(x.shape[0])
    flip = rng.random(n) < 0.5
    x = tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
    grey = tf.reduce_mean(x, axis=-1, keepdims=True)
    sat = rng.uniform(0.6, 1.4, (n, 1, 1, 1)).astype(np.float32)
    x = grey + (x - grey) * sat
    contrast = rng.uniform(0.75, 1.3, (n, 1, 1, 1)).astype(np.float32)
    brightness = rng.uniform(-30, 30, (n, 1, 1, 1)).astype(np.float32)
    return tf.clip_by_value((x - 128.0) * contrast + 128.0 + brightness, 0.0, 255.0)


def predict(model: Any, patches: np.ndarray, config: ClassifierConfig, batch: int = 128) -> np.ndarray:
    """Class probabilities [N,C] of the served crop (no jitter) of each patch."""
    out = []
    rng = np.random.default_rng(0)
    for start in range(0, len(patches), batch):
        chunk = patches[start : start + batch]
        x = crops(chunk, jittered_windows(len(chunk), rng, config.margin, jitter=False), config.size)
        out.append(model(x / 127.5 - 1.0, training=False).numpy())
    return np.concatenate(out) if out else np.zeros((0, int(model.output_shape[-1])), np.float32)


def has_face_output(model: Any) -> bool:
    """Whether the classifier ends with `build_classifier`'s "is this a face" column."""
    return any(layer.name == FACE_LAYER for layer in model.layers)


def per_class_recall(probs: np.ndarray, labels: np.ndarray, classes: int) -> list[float | None]:
    predicted = np.argmax(probs, axis=-1)
    return [float(np.mean(predicted[labels == c] == c)) if np.any(labels == c) else None for c in range(classes)]


def train_classifier(
    model: Any,
    patches: np.ndarray,
    labels: np.ndarray,
    config: ClassifierConfig,
    checkpoint_dir: Path,
    resume: bool,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train in place; a checkpoint after every epoch; with `resume`, carry on from the latest one. Epoch e's
    shuffling, jitter and augmentation draw from a generator seeded with (seed, e)."""
    import tf_keras

    tf.random.set_seed(config.seed)  # dropout draws: the same whatever ran before in this process
    quicken_batchnorm(model)
    face_output = has_face_output(model)
    classes = int(model.output_shape[-1]) - int(face_output)
    steps_per_epoch = max(1, len(patches) // config.batch_size)
    schedule = tf_keras.optimizers.schedules.CosineDecay(config.learning_rate, config.epochs * steps_per_epoch, alpha=0.05)
    optimizer = tf_keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch)
    manager = tf.train.CheckpointManager(ckpt, str(checkpoint_dir), max_to_keep=2)
    optimizer.build(model.trainable_variables)  # slots exist before a restore fills them
    if resume and manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        logger.info("classifier resumed checkpoint=%s epoch=%d", manager.latest_checkpoint, int(epoch.numpy()))
    if not face_output and np.any(labels >= classes):
        raise ValueError(f"labels reach {int(labels.max())}: not-a-face patches need a classifier with a face output")
    faces = labels[labels < classes]
    weights = tf.constant(class_weights(faces, classes, config.weight_power))
    logger.info(
        "classifier class_weights=%s counts=%s not_faces=%d",
        np.round(weights.numpy(), 3).tolist(),
        np.bincount(faces, minlength=classes).tolist(),
        int(np.sum(labels >= classes)),
    )
    variables = model.trainable_variables
    smoothing = config.label_smoothing

    @tf.function(reduce_retracing=True)
    def step(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        is_face = y < classes
        yc = tf.minimum(y, classes - 1)
        target = tf.one_hot(yc, classes) * (1.0 - smoothing) + smoothing / classes
        with tf.GradientTape() as tape:
            out = model(x / 127.5 - 1.0, training=True)
            probs = out[:, :classes]
            ce = -tf.reduce_sum(target * tf.math.log(tf.clip_by_value(probs, 1e-7, 1.0)), axis=-1)
            w = tf.where(is_face, tf.gather(weights, yc), 0.0)
            loss = tf.reduce_sum(ce * w) / tf.maximum(tf.reduce_sum(w), 1e-6)
            right = tf.argmax(probs, axis=-1, output_type=tf.int32) == y
            if face_output:  # the class loss counts faces only; "is it a face" counts every patch
                p_face = tf.clip_by_value(out[:, classes], 1e-7, 1.0 - 1e-7)
                t_face = tf.cast(is_face, tf.float32) * (1.0 - smoothing) + smoothing / 2
                bce = -(t_face * tf.math.log(p_face) + (1.0 - t_face) * tf.math.log(1.0 - p_face))
                loss += tf.reduce_mean(bce)
                right = tf.where(is_face, right & (p_face >= 0.5), p_face < 0.5)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss, tf.reduce_mean(tf.cast(right, tf.float32))

    figures: dict[str, Any] = last_figures(checkpoint_dir)
    while int(epoch.numpy()) < config.epochs:
        e = int(epoch.numpy())
        rng = np.random.default_rng([config.seed, 1000 + e])
        order = rng.permutation(len(patches))
        started = time.monotonic()
        sums = np.zeros(2)
        for k in range(steps_per_epoch):
            idx = np.sort(order[k * config.batch_size : (k + 1) * config.batch_size])
            x = augment(crops(patches[idx], jittered_windows(len(idx), rng, config.margin, jitter=True), config.size), rng)
            loss, acc = step(x, tf.constant(labels[idx]))
            sums += (float(loss), float(acc))
        epoch.assign_add(1)
        manager.save()
        figures = {"loss": sums[0] / steps_per_epoch, "accuracy": sums[1] / steps_per_epoch}
        if val is not None and len(val[0]):
            val_probs = predict(model, val[0], config)
            figures["val_recall"] = per_class_recall(val_probs[:, :classes], val[1], classes)
            if face_output:
                figures["val_face_recall"] = float(np.mean(val_probs[val[1] < classes, classes] >= 0.5))
        logger.info(
            "classifier epoch=%d/%d loss=%.4f accuracy=%.3f val_recall=%s val_face_recall=%s seconds=%.0f",
            e + 1,
            config.epochs,
            figures["loss"],
            figures["accuracy"],
            [None if r is None else round(r, 3) for r in figures.get("val_recall", [])],
            figures.get("val_face_recall"),
            time.monotonic() - started,
        )
        save_figures(checkpoint_dir, e + 1, figures)
        if on_epoch is not None:
            on_epoch(e + 1, figures)
    return figures

