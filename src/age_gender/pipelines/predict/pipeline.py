from kedro.pipeline import Pipeline, node

from age_gender.pipelines.evaluation.pipeline import model_inputs

from .nodes import predict_photos


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(predict_photos,
             {"photos": "photos_raw", "params": "params:predict", "inference": "params:inference",
              **model_inputs("model")},
             ["photo_predictions", "annotated_photos", "predict_report"], name="predict_photos"),
    ])
