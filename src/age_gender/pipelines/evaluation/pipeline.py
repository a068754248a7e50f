from kedro.pipeline import Pipeline, node

from .nodes import (
    comparison,
    compute_metrics,
    plot_age_predictions,
    plot_confusion,
    plot_error_by_band,
    plot_gallery,
    predict_models,
    test_rows,
)


def judging_nodes() -> list:
    """Nodes from evaluation rows to metrics and plots; shared with ``evaluate_external``."""
    return [
        node(predict_models, ["face_cache", "evaluation_rows", "scratch_model", "transfer_model",
                                    "params:inference"],
             "evaluation_predictions", name="predict_models"),
        node(compute_metrics, "evaluation_predictions", "evaluation_metrics", name="compute_metrics"),
        node(comparison, ["evaluation_metrics", "scratch_test_metrics", "transfer_test_metrics"],
             ["model_comparison", "model_comparison_markdown", "model_comparison_plot"],
             name="compare_models"),
        node(plot_age_predictions, "evaluation_predictions", "age_prediction_plot",
             name="plot_age_predictions"),
        node(plot_error_by_band, "evaluation_metrics", "error_by_group_plot", name="plot_error_by_group"),
        node(plot_confusion, "evaluation_metrics", "confusion_matrix_plot", name="plot_confusion"),
        node(plot_gallery, ["evaluation_predictions", "face_cache"], "prediction_gallery",
             name="plot_gallery"),
    ]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([node(test_rows, "face_splits", "evaluation_rows", name="test_rows"), *judging_nodes()])
