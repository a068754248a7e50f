"""age_gender: age-and-gender face models on UTKFace, as Kedro pipelines.

``age_gender.predict_faces(model, images)`` predicts age and gender for every face in photos
(see :func:`age_gender.photos.predict_faces`); it is imported on first use, so importing the
package stays cheap.
"""

__version__ = "0.1.0"
__all__ = ["predict_faces"]


def __getattr__(name: str):
    if name == "predict_faces":
        from age_gender.photos import predict_faces

        return predict_faces
    raise AttributeError(f"module 'age_gender' has no attribute {name!r}")
