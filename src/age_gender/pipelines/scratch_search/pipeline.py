from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node

from .nodes import select_architecture, train_candidate

# Slots for grid candidates: each an independent node (its own namespace) so a parallel runner or
# an orchestrator can run them apart. The grid itself is configuration (scratch_search.grid);
# slots past the grid or past max_candidates report "skipped" in a moment.
SLOTS = 24


def _slot_function(slot: int):
    function = partial(train_candidate, slot=slot)
    return update_wrapper(function, train_candidate)


def create_pipeline(**kwargs) -> Pipeline:
    slots = [
        Pipeline(
            [node(_slot_function(i),
                  ["face_cache", "face_splits", "scratch_search_checkpoints", "params:scratch_search",
                   "params:scratch_training",
                   "params:device", "params:inference"],
                  f"scratch_search.slot_{i + 1:02d}.result",
                  name=f"slot_{i + 1:02d}_train_candidate", namespace="scratch_search")]
        )
        for i in range(SLOTS)
    ]
    select = node(
        select_architecture,
        ["params:scratch_search", *[f"scratch_search.slot_{i + 1:02d}.result" for i in range(SLOTS)]],
        ["scratch_search_results", "scratch_search_winner", "scratch_search_plot"],
        name="select_architecture",
    )
    return sum(slots, Pipeline([])) + Pipeline([select])
