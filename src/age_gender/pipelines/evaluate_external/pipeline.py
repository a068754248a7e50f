"""The ingestion pipeline (same cleaning, same report, any label source), an overlap check
against the training data, and the evaluation's judging nodes, reused under the ``external``
namespace: every output gets an ``external.`` name of its own. The evaluation's comparison with
the study is replaced by ``external_comparison``, whose text says what the numbers are."""

from kedro.pipeline import Pipeline, node

from age_gender.pipelines.evaluation.pipeline import MODELS, judging_nodes, model_inputs
from age_gender.pipelines.ingestion import create_pipeline as ingestion_pipeline

from .nodes import external_comparison, find_overlap, predict_all_faces, unseen_predictions

SHARED = tuple(f"{name}_{suffix}" for name in MODELS for suffix in ("model", "training_info", "held_out_headline"))
# the training data the external images are compared with (not namespaced)
TRAINING = {"training_manifest": "face_manifest", "training_cache": "face_cache",
            "training_splits": "face_splits"}


def create_pipeline(**kwargs) -> Pipeline:
    overlap = node(find_overlap, ["face_manifest", "training_manifest", "training_cache", "training_splits",
                                  "params:external"], ["scored_rows", "overlap_report"], name="find_overlap")
    predict = node(predict_all_faces,
                   {"face_cache": "face_cache", "rows": "scored_rows", "inference": "params:inference",
                    **model_inputs("model")},
                   "all_predictions", name="predict_all_faces")
    unseen = node(unseen_predictions, "all_predictions", "evaluation_predictions", name="unseen_predictions")
    compare = node(external_comparison,
                   {"all_predictions": "all_predictions", "overlap_report": "overlap_report",
                    "evaluation": "params:evaluation", **{f"{m}_info": f"{m}_training_info" for m in MODELS},
                    **{f"{m}_held_out": f"{m}_held_out_headline" for m in MODELS}},
                   ["external_comparison", "external_comparison_markdown"], name="external_comparison")
    judging = [n for n in judging_nodes() if n.name != "compare_models"]
    inner = Pipeline([ingestion_pipeline(), overlap, predict, unseen, compare, *judging])
    return Pipeline(
        inner,
        namespace="external",
        inputs={"utkface_raw": "external_raw", **TRAINING, **{name: name for name in SHARED}},
        parameters={"params:ingestion": "params:ingestion", "params:inference": "params:inference",
                    "params:evaluation": "params:evaluation", "params:external": "params:external"},
    )
