from kedro.pipeline import Pipeline, node

from .nodes import predict_photos


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(predict_photos, ["photos_raw", "scratch_model", "transfer_model", "params:predict", "params:inference"],
             ["photo_predictions", "annotated_photos", "predict_report"], name="predict_photos"),
    ])
