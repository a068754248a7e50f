"""The comparison node on hand-made headlines: intervals, paired differences and the budget flag
in the JSON, the Markdown and the plot."""

from age_gender.hooks import TrainingHooks
from age_gender.pipelines.evaluation.nodes import comparison


def _headlines():
    return {"scratch": {"gender_accuracy": 0.884, "gender_accuracy_ci": [0.8723, 0.8953], "age_mae": 6.048,
                        "age_mae_ci": [5.861, 6.24], "n": 3000, "out_of_time": True, "epochs_run": 23},
            "transfer": lambda: {"gender_accuracy": 0.9, "gender_accuracy_ci": [0.889, 0.9107], "age_mae": 5.6,
                                 "age_mae_ci": [5.42, 5.79], "n": 3000, "out_of_time": False,
                                 "backbone": "mobilenet_v2"}}


PAIRED = [{"first": "transfer", "second": "scratch", "n": 3000, "gender_accuracy": 0.016,
           "gender_accuracy_ci": [0.004, 0.028], "age_mae": -0.448, "age_mae_ci": [-0.61, -0.29]}]


def test_comparison_shows_intervals_paired_differences_and_the_budget_flag():
    table, markdown, figure = comparison(_headlines(), PAIRED)
    rows = {r["model"]: r for r in table["models"]}
    assert rows["scratch"]["gender_accuracy_ci"] == [0.8723, 0.8953] and rows["scratch"]["out_of_time"] is True
    assert rows["study_cnn10"]["gender_accuracy_ci"] is None
    assert table["paired_differences"] == PAIRED
    assert "| scratch (stopped by its time budget) | 88.40 [87.23, 89.53] | 6.048 [5.861, 6.240] | 3000 |" in markdown
    assert "| transfer | 90.00 [88.90, 91.07] | 5.600 [5.420, 5.790] |" in markdown
    assert ("- transfer - scratch: gender accuracy +1.60 points [+0.40, +2.80], age MAE -0.448 years "
            "[-0.610, -0.290] (n 3000)") in markdown
    assert "WARNING: scratch stopped on its wall-clock budget" in markdown
    assert len(figure.axes) == 2 and figure.axes[0].containers  # bars with error bars


def test_comparison_without_intervals_or_pairs_still_renders():
    plain = {"scratch": {"gender_accuracy": 0.5, "age_mae": 9.0, "n": 60}}
    table, markdown, _ = comparison(plain, [])
    assert table["paired_differences"] == [] and "Paired" not in markdown and "WARNING" not in markdown
    assert "| scratch | 50.00 | 9.000 | 60 |" in markdown


def test_training_hooks_remember_every_fit_out_of_time_and_warn_once_at_the_end(caplog):
    hooks = TrainingHooks()
    hooks.before_pipeline_run({}, type("P", (), {"inputs": lambda self: set()})(), None)
    hooks.after_node_run(None, None, {}, {"scratch_training_info": {"out_of_time": True, "epochs_run": 4},
                                          "scratch_history": {"loss": [1.0]}}, False, "r")
    hooks.after_node_run(None, None, {}, {"transfer_training_info": {"out_of_time": False}}, False, "r")
    with caplog.at_level("WARNING", logger="age_gender.hooks"):
        hooks.after_pipeline_run({}, {}, None, None)
    (record,) = [r for r in caplog.records if r.name == "age_gender.hooks"]
    assert "scratch_training_info (epochs run: 4)" in record.getMessage() and "transfer" not in record.getMessage()
