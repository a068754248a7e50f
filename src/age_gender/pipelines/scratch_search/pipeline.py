"""One namespaced modular pipeline per candidate of ``scratch_search.grid`` (a mapping of candidate
name to settings), built when the pipeline is created from the run's parameters (Kedro's
dynamic-pipelines pattern), then one node that ranks them.

``scratch_search.cnn10.train_candidate`` reads ``params:scratch_search.grid.cnn10`` and writes
``scratch_search.cnn10.search_result``; its checkpoints are ``scratch_search.cnn10.checkpoints``
(both catalog factory patterns). ``max_candidates`` caps how many run, from the top.
"""

from kedro.pipeline import Pipeline, node

from age_gender.project_config import parameters

from .nodes import active_candidates, select_architecture, train_candidate

SHARED_PARAMETERS = ("params:scratch_training", "params:device", "params:inference")


def candidate_pipeline(name: str) -> Pipeline:
    template = Pipeline([node(train_candidate,
                              ["face_cache", "face_splits", "checkpoints", "params:candidate", "params:scratch_training",
                               "params:search_training", "params:device", "params:inference"],
                              "search_result", name="train_candidate")])
    return Pipeline(template, namespace=f"scratch_search.{name}", inputs={"face_cache", "face_splits"},
                    parameters={"params:candidate": f"params:scratch_search.grid.{name}",
                                "params:search_training": "params:scratch_search.training",
                                **{p: p for p in SHARED_PARAMETERS}})


def create_pipeline(**kwargs) -> Pipeline:
    try:
        names = active_candidates(parameters().get("scratch_search") or {})
    except ValueError:  # a broken grid must not break every other pipeline: select_architecture says why
        names = []
    select = node(select_architecture,
                  {"search": "params:scratch_search", **{n: f"scratch_search.{n}.search_result" for n in names}},
                  ["scratch_search_results", "scratch_search_winner", "scratch_search_plot"],
                  name="select_architecture")
    return sum((candidate_pipeline(n) for n in names), Pipeline([])) + Pipeline([select])
