from kedro.pipeline import Pipeline, node

from .nodes import train_scratch_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(train_scratch_model,
                 ["face_cache", "face_splits", "scratch_search_winner", "scratch_checkpoints", "params:scratch",
                  "params:scratch_training", "params:device"],
                 ["scratch_model", "scratch_history", "scratch_training_info", "scratch_learning_curves"],
                 name="train_scratch_model"),
        ]
    )
