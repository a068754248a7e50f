from kedro.pipeline import Pipeline, node

from age_gender.project_config import parameters

from .fairness_nodes import compute_fairness, write_model_cards
from .nodes import (
    add_ensembles,
    comparison,
    compute_metrics,
    headlines,
    paired_differences,
    plot_age_predictions,
    plot_confusion,
    plot_error_by_band,
    plot_gallery,
    predict_test_split,
)

# The models judged by default, by name: each has `{name}_model` and `{name}_training_info` catalog
# entries (factory patterns). The evaluation pipeline judges `evaluation.models` (parameters, read
# when the pipeline is created, e.g. [scratch, transfer, distilled]); export, predict and
# evaluate_external use these.
MODELS = ("scratch", "transfer")


def evaluated_models() -> tuple[str, ...]:
    """``evaluation.models`` of this run's parameters (``MODELS`` when unset or malformed: the
    parameter validation then says why, before any node runs)."""
    names = (parameters().get("evaluation") or {}).get("models")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.isidentifier() for n in names):
        return MODELS
    return tuple(dict.fromkeys(names))


def model_inputs(suffix: str, models: tuple[str, ...] = MODELS) -> dict[str, str]:
    return {name: f"{name}_{suffix}" for name in models}


def judging_nodes(models: tuple[str, ...] = MODELS) -> list:
    """Nodes from `evaluation_predictions` to metrics and plots; shared with `evaluate_external`."""
    return [
        node(compute_metrics, ["evaluation_predictions", "params:evaluation"], "evaluation_metrics",
             name="compute_metrics"),
        node(paired_differences, ["evaluation_predictions", "params:evaluation"], "paired_differences",
             name="paired_differences"),
        node(headlines, {"metrics": "evaluation_metrics", "inference": "params:inference",
                         "evaluation": "params:evaluation", **model_inputs("training_info", models)}, "test_metrics",
             name="headlines"),
        node(comparison, ["test_metrics", "paired_differences"], ["model_comparison", "model_comparison_markdown", "model_comparison_plot"],
             name="compare_models"),
        node(plot_age_predictions, "evaluation_predictions", "age_prediction_plot", name="plot_age_predictions"),
        node(plot_error_by_band, "evaluation_metrics", "error_by_group_plot", name="plot_error_by_group"),
        node(plot_confusion, "evaluation_metrics", "confusion_matrix_plot", name="plot_confusion"),
        node(plot_gallery, ["evaluation_predictions", "face_cache"], "prediction_gallery", name="plot_gallery"),
        *fairness_nodes(),
    ]


def fairness_nodes() -> list:
    """The fairness report and its heat-map (also under ``external``)."""
    return [node(compute_fairness, ["evaluation_predictions", "params:evaluation"],
                 ["fairness_report", "fairness_heatmap_plot"], name="compute_fairness")]


def model_card_node(models: tuple[str, ...] = MODELS):
    """One Markdown model card per evaluated model; reads ``predict_report`` when one exists."""
    return node(write_model_cards,
                {"metrics": "evaluation_metrics", "fairness": "fairness_report", "face_splits": "face_splits",
                 "predict_report": "model_card_predict_report", "evaluation": "params:evaluation",
                 **model_inputs("training_info", models)},
                "model_cards", name="write_model_cards")


def create_pipeline(**kwargs) -> Pipeline:
    models = evaluated_models()
    predict = node(predict_test_split,
                   {"face_cache": "face_cache", "face_splits": "face_splits", "inference": "params:inference",
                    **model_inputs("model", models)},
                   "model_predictions", name="predict_test_split")
    ensembles = node(add_ensembles, ["model_predictions", "params:evaluation"], "evaluation_predictions",
                     name="add_ensembles")
    return Pipeline([predict, ensembles, *judging_nodes(models), model_card_node(models)])
