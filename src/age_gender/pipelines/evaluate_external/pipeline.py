"""The ingestion pipeline (same cleaning, same report) and the evaluation's judging nodes, reused
under the ``external`` namespace: every output gets an ``external.`` name of its own."""

from kedro.pipeline import Pipeline, node

from age_gender.pipelines.evaluation.nodes import all_rows
from age_gender.pipelines.evaluation.pipeline import judging_nodes
from age_gender.pipelines.ingestion import create_pipeline as ingestion_pipeline

SHARED = ("scratch_model", "transfer_model", "scratch_test_metrics", "transfer_test_metrics")


def create_pipeline(**kwargs) -> Pipeline:
    inner = Pipeline([
        ingestion_pipeline(),
        node(all_rows, "face_manifest", "evaluation_rows", name="all_rows"),
        *judging_nodes(),
    ])
    return Pipeline(
        inner,
        namespace="external",
        inputs={"utkface_raw": "external_raw", **{name: name for name in SHARED}},
        parameters={"params:ingestion": "params:ingestion", "params:inference": "params:inference"},
    )
