from kedro.pipeline import Pipeline, node

from .nodes import compare_runs


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(compare_runs, "tracked_runs", ["run_comparison", "run_comparison_markdown", "run_comparison_plot"],
             name="compare_runs"),
    ])
