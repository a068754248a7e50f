"""Multi-worker training with ``tf.distribute.MultiWorkerMirroredStrategy``, driven by TF_CONFIG.

Run one process per worker, each with the same cluster and its own task index::

    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}' \
        python -m age_gender.multiworker --cache data/03_primary/face_cache/64px.npy \
            --splits data/05_model_input/face_splits.parquet --epochs 2 --out worker0.json

The training step is the project's own (``device_setup`` picks the strategy from TF_CONFIG,
``make_dataset`` feeds it, gradients are all-reduced across workers every step). Each worker
writes a summary with a checksum of its final weights: in synchronous training they agree.
"""

from __future__ import annotations

import argparse
import json
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

    from age_gender.training import device_setup

    strategy, _, _ = device_setup({"mixed_precision": "none"})  # first: before any other TF op
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from age_gender.models import build_multitask_cnn
    from age_gender.training import compile_multitask, make_dataset, select_split, set_seeds

    set_seeds(7)
    images = np.load(args.cache, mmap_mode="r")
    splits = pd.read_parquet(args.splits)
    if args.limit:
        train_rows = splits[splits["split"] == "train"].head(args.limit)
        splits = pd.concat([train_rows, splits[splits["split"] != "train"]])
    data = select_split({f"{images.shape[1]}px": images}, splits, images.shape[1], ["train"])
    workers = strategy.num_replicas_in_sync
    dataset = make_dataset(data, args.batch_size * workers, shuffle=True, seed=7)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)
    with strategy.scope():
        model = build_multitask_cnn(input_size=images.shape[1], conv_pairs=2, dense_layers=1, dense_units=16,
                                    width_multiplier=0.125, split_point=1, age_mean=float(data.age.mean()))
        compile_multitask(model, 1e-3, {"age": 0.1, "gender": 1.0})
    history = model.fit(dataset, epochs=args.epochs, verbose=2)
    summary = {"replicas": int(workers), "strategy": type(strategy).__name__,
               "loss": [float(v) for v in history.history["loss"]],
               "weights_checksum": float(sum(float(np.abs(w).sum()) for w in model.get_weights()))}
    Path(args.out).write_text(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
