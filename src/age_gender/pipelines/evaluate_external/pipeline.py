"""The ingestion pipeline (same cleaning, same report, any label source), an overlap check
against the training data, and the evaluation's judging nodes, reused under an ``external``
namespace per external dataset: every output gets a name of its own. The evaluation's comparison
with the study is replaced by ``external_comparison``, whose text says what the numbers are.

Which datasets: ``external.datasets`` (parameters), a list of catalog entries, read when the
pipeline is created (Kedro's dynamic-pipelines pattern, as ``scratch_search``): one modular
pipeline ``external.<name>`` per entry (outputs ``external.<name>.*``, in ``data/*/external/<name>/``).
Empty (the default): the one entry ``external_raw`` under the namespace ``external``. Either way
``external_report`` (JSON + Markdown) puts every dataset's results side by side.
"""

from kedro.pipeline import Pipeline, node

from age_gender.pipelines.evaluation.pipeline import MODELS, judging_nodes, model_inputs
from age_gender.pipelines.ingestion import create_pipeline as ingestion_pipeline
from age_gender.project_config import parameters

from .nodes import (
    external_comparison,
    external_report,
    find_overlap,
    predict_all_faces,
    unseen_predictions,
)

SHARED = tuple(f"{name}_{suffix}" for name in MODELS for suffix in ("model", "training_info", "held_out_headline"))
# the training data the external images are compared with (not namespaced)
TRAINING = {"training_manifest": "face_manifest", "training_cache": "face_cache",
            "training_splits": "face_splits"}
#: The raw input of the single-dataset form (``external.datasets: []``).
SINGLE_SOURCE = "external_raw"


def dataset_pipeline(namespace: str, source: str) -> Pipeline:
    """Ingestion, overlap check, predictions and judging of the catalog entry ``source`` (a
    ``FaceSourceDataset``), every output named ``<namespace>.<output>``."""
    overlap = node(find_overlap, ["face_manifest", "training_manifest", "training_cache", "training_splits",
                                  "params:external", "face_cache"], ["scored_rows", "overlap_report"],
                   name="find_overlap")
    predict = node(predict_all_faces,
                   {"face_cache": "face_cache", "rows": "scored_rows", "inference": "params:inference",
                    "evaluation": "params:evaluation", **model_inputs("model")},
                   "all_predictions", name="predict_all_faces")
    unseen = node(unseen_predictions, "all_predictions", "evaluation_predictions", name="unseen_predictions")
    compare = node(external_comparison,
                   {"all_predictions": "all_predictions", "overlap_report": "overlap_report",
                    "evaluation": "params:evaluation", "ingestion_report": "ingestion_report",
                    **{f"{m}_info": f"{m}_training_info" for m in MODELS},
                    **{f"{m}_held_out": f"{m}_held_out_headline" for m in MODELS}},
                   ["external_comparison", "external_comparison_markdown"], name="external_comparison")
    judging = [n for n in judging_nodes() if n.name != "compare_models"]
    inner = Pipeline([ingestion_pipeline(), overlap, predict, unseen, compare, *judging])
    return Pipeline(
        inner,
        namespace=namespace,
        inputs={"utkface_raw": source, **TRAINING, **{name: name for name in SHARED}},
        parameters={"params:ingestion": "params:ingestion", "params:inference": "params:inference",
                    "params:evaluation": "params:evaluation", "params:external": "params:external"},
    )


def external_datasets() -> dict[str, str]:
    """Namespace -> catalog entry of every external dataset of this run's parameters."""
    names = (parameters().get("external") or {}).get("datasets") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        names = []  # the parameter validation says why before any node runs
    return {f"external.{name}": name for name in dict.fromkeys(names)} or {"external": SINGLE_SOURCE}


def create_pipeline(**kwargs) -> Pipeline:
    datasets = external_datasets()
    report = node(external_report,
                  {**{f"{source}": f"{namespace}.external_comparison" for namespace, source in datasets.items()},
                   **{f"{source}__ingestion": f"{namespace}.ingestion_report" for namespace, source in datasets.items()}},
                  ["external_report", "external_report_markdown"], name="external_report")
    return sum((dataset_pipeline(ns, source) for ns, source in datasets.items()), Pipeline([])) + Pipeline([report])
