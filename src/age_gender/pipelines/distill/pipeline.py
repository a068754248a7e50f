"""``distill``: the transfer model (teacher) labels the unused faces; the scratch CNN (student)
trains on them plus train + val1. Not part of the default run (``kedro run``): run it after
``transfer``, then judge it with ``evaluation.models: [scratch, transfer, distilled]``."""

from kedro.pipeline import Pipeline, node

from .nodes import label_unused_faces, train_distilled_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(label_unused_faces,
                 ["face_cache", "face_splits", "transfer_model", "transfer_training_info", "params:distill",
                  "params:inference"],
                 "distill_targets", name="label_unused_faces"),
            node(train_distilled_model,
                 {"face_cache": "face_cache", "face_splits": "face_splits", "distill_targets": "distill_targets",
                  "checkpoints": "distilled_checkpoints", "scratch": "params:scratch",
                  "training": "params:scratch_training", "distill": "params:distill", "device": "params:device",
                  "winner": "scratch_search_winner"},
                 ["distilled_model", "distilled_history", "distilled_training_info", "distilled_learning_curves"],
                 name="train_distilled_model"),
        ]
    )
