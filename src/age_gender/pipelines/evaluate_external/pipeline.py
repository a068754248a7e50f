"""The ingestion pipeline (same cleaning, same report) and the evaluation's judging nodes, reused
under the ``external`` namespace: every output gets an ``external.`` name of its own."""

from kedro.pipeline import Pipeline, node

from age_gender.pipelines.evaluation.pipeline import MODELS, judging_nodes, model_inputs
from age_gender.pipelines.ingestion import create_pipeline as ingestion_pipeline

from .nodes import predict_all_faces

SHARED = tuple(f"{name}_{suffix}" for name in MODELS for suffix in ("model", "training_info"))


def create_pipeline(**kwargs) -> Pipeline:
    predict = node(predict_all_faces,
                   {"face_cache": "face_cache", "face_manifest": "face_manifest", "inference": "params:inference",
                    **model_inputs("model")},
                   "evaluation_predictions", name="predict_all_faces")
    inner = Pipeline([ingestion_pipeline(), predict, *judging_nodes()])
    return Pipeline(
        inner,
        namespace="external",
        inputs={"utkface_raw": "external_raw", **{name: name for name in SHARED}},
        parameters={"params:ingestion": "params:ingestion", "params:inference": "params:inference",
                    "params:evaluation": "params:evaluation"},
    )
