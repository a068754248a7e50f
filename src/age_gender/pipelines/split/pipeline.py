from kedro.pipeline import Pipeline, node

from .nodes import split_faces


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [node(split_faces, ["face_manifest", "face_cache", "params:split", "ingestion_report"],
              ["face_splits", "split_summary"], name="split_faces")]
    )
