from kedro.pipeline import Pipeline, node

from .nodes import (
    compare_backbones,
    extract_features,
    search_heads,
    train_transfer_model,
    tune_head,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(extract_features, ["face_cache", "face_splits", "params:transfer"],
                 ["transfer_features", "backbone_provenance"], name="extract_features"),
            node(compare_backbones,
                 ["transfer_features", "backbone_provenance", "face_splits", "params:transfer"],
                 ["backbone_comparison", "backbone_comparison_plot"], name="compare_backbones"),
            node(search_heads, ["transfer_features", "backbone_provenance", "face_splits", "params:transfer"],
                 ["head_search_results", "head_search_plot"], name="search_heads"),
            node(tune_head, ["transfer_features", "backbone_provenance", "face_splits", "head_search_results",
                             "hyperband_trials", "params:transfer"],
                 "transfer_best_head", name="tune_head_hyperband"),
            node(train_transfer_model,
                 ["face_cache", "face_splits", "transfer_features", "backbone_provenance",
                  "transfer_best_head", "transfer_checkpoints", "params:transfer", "params:device"],
                 ["transfer_model", "transfer_history", "transfer_training_info", "transfer_learning_curves"],
                 name="train_transfer_model"),
        ]
    )
