from kedro.pipeline import Pipeline, node

from age_gender.pipelines.evaluation.pipeline import MODELS

from .nodes import check_exports, export_models

INPUTS = {f"{name}_{suffix}": f"{name}_{suffix}" for name in MODELS for suffix in ("model", "training_info")}


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(export_models, {"face_splits": "face_splits", "export": "params:export", "inference": "params:inference",
                             **INPUTS}, "exported_models", name="export_models"),
        node(check_exports, {"exported": "exported_models", "face_cache": "face_cache", "face_splits": "face_splits",
                             "export": "params:export", **{k: k for k in INPUTS if k.endswith("_model")}},
             ["export_report", "export_table"], name="check_exports"),
    ])
