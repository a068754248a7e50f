"""age_gender: age-and-gender face models on UTKFace, as Kedro pipelines."""

__version__ = "0.1.0"
