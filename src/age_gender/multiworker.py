"""Multi-worker training with ``tf.distribute.MultiWorkerMirroredStrategy``, driven by TF_CONFIG.

Run one process per worker, each with the same cluster and its own task index::

    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}' \
        python -m age_gender.multiworker --cache data/03_primary/face_cache/64px.npy \
            --splits data/05_model_input/face_splits.parquet --epochs 2 --out worker0.json

The data comes from the project's ``make_dataset``, the model from its builder; gradients are all-reduced across
workers every step. Each worker
writes a summary with a checksum of its trainable weights: in synchronous training they agree
(batch-norm moving statistics stay per worker, as in any MultiWorkerMirroredStrategy run).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, help="a face_cache .npy (uint8 N x S x S x 3)")
    parser.add_argument("--splits", required=True, help="face_splits parquet")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16, help="per worker")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N training rows")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend != "tensorflow":  # checked without importing Keras: the strategy must come first
        raise SystemExit(f"age_gender.multiworker runs on the TensorFlow backend only (KERAS_BACKEND is "
                         f"{backend!r}); on JAX, Keras's own keras.distribution API spans machines.")
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # first: before any other TF op
    import keras
    import numpy as np
    import pandas as pd

    from age_gender.models import build_multitask_cnn
    from age_gender.training import make_dataset, select_split, set_seeds

    set_seeds(7)
    images = np.load(args.cache, mmap_mode="r")
    splits = pd.read_parquet(args.splits)
    if args.limit:
        train_rows = splits[splits["split"] == "train"].head(args.limit)
        splits = pd.concat([train_rows, splits[splits["split"] != "train"]])
    data = select_split({f"{images.shape[1]}px": images}, splits, images.shape[1], ["train"])
    workers = strategy.num_replicas_in_sync
    dataset = make_dataset(data, args.batch_size * workers, shuffle=True, seed=7, pipeline="tf.data")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)
    with strategy.scope():
        model = build_multitask_cnn(input_size=images.shape[1], conv_pairs=2, dense_layers=1, dense_units=16,
                                    width_multiplier=0.125, split_point=1, age_mean=float(data.age.mean()))
        optimizer = keras.optimizers.Adam(1e-3)
    age_loss = keras.losses.Huber(delta=5.0, reduction=None)
    gender_loss = keras.losses.BinaryCrossentropy(reduction=None)
    global_batch = args.batch_size * workers

    # Keras 3's model.fit does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585),
    # so the step is written out: per-replica loss, all-reduced gradients, one optimizer update.
    @tf.function
    def train_step(batch):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                out = model(x, training=True)
                per_example = 0.1 * age_loss(y["age"], out["age"]) + gender_loss(y["gender"], out["gender"])
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        per_replica = strategy.run(replica_step, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    distributed = strategy.experimental_distribute_dataset(dataset)
    losses = []
    for epoch in range(args.epochs):
        total, steps = 0.0, 0
        for batch in distributed:
            total += float(train_step(batch))
            steps += 1
        losses.append(total / max(steps, 1))
        print(f"epoch {epoch + 1}: loss {losses[-1]:.4f} over {steps} steps", flush=True)
    summary = {"replicas": int(workers), "strategy": type(strategy).__name__,
               "loss": losses,
               "trainable_checksum": float(sum(float(np.abs(v.numpy()).sum()) for v in model.trainable_weights))}
    Path(args.out).write_text(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
