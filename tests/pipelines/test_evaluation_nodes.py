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


def test_range_labelled_test_data_shows_the_share_inside_the_range_not_an_age_mae():
    """FairFace-style ranges: the headline, the paired difference and the comparison table give
    the share of predictions inside the range with its interval; the midpoint MAE is named so."""
    import pandas as pd

    from age_gender.pipelines.evaluation.nodes import compute_metrics, headlines, paired_differences

    rows = pd.DataFrame({"cache_index": range(8), "file_name": [f"{i}.jpg" for i in range(8)],
                         "age": [24] * 4 + [34] * 4, "age_low": [20] * 4 + [30] * 4,
                         "age_high": [29] * 4 + [39] * 4, "gender": [0, 1] * 4, "race": [0] * 8,
                         "female_prob": [0.2, 0.8] * 4, "gender_pred": [0, 1] * 4})
    predictions = pd.concat([rows.assign(model="scratch", age_pred=[21.0, 29.5, 31, 40, 30, 35, 40.0, 50]),
                             rows.assign(model="transfer", age_pred=[25.0] * 4 + [35.0] * 4)])
    evaluation = {"bootstrap": {"resamples": 200, "confidence": 0.95, "seed": 0}}
    metrics = compute_metrics(predictions, evaluation)
    heads = headlines(metrics, {"flip_average": True, "zooms": [1.05, 1.1], "shift": 0.0}, scratch=None, transfer=None)
    assert heads["scratch"]["age_in_range_share"] == 0.5 and heads["transfer"]["age_in_range_share"] == 1.0
    # the metrics say which test-time views the predictions averaged
    assert heads["transfer"]["test_time_augmentation"] == {"flip_average": True, "zooms": [1.05, 1.1], "shift": 0.0,
                                                           "views": 6}
    assert "mean over 6 test-time views" in comparison(heads, [])[1]
    assert heads["scratch"]["age_labels"] == "ranges"
    paired = paired_differences(predictions, evaluation)
    (difference,) = paired
    assert difference["age_in_range_share"] == 0.5 and "age_mae" not in difference
    assert difference["age_midpoint_mae"] == round(metrics["transfer"]["age"]["mae"] - metrics["scratch"]["age"]["mae"], 3)
    table, markdown, figure = comparison(heads, paired)
    scratch = next(r for r in table["models"] if r["model"] == "scratch")
    low, high = scratch["age_in_range_share_ci"]
    assert scratch["age_mae"] is None and scratch["age_midpoint_mae"] == metrics["scratch"]["age"]["mae"]
    assert f"| scratch | 100.00 [100.00, 100.00] | 50.00 [{100 * low:.2f}, {100 * high:.2f}] % inside the labelled range | 8 |" in markdown
    assert "| study_cnn10 | 90.98 | MAE 5.949 years | 499 |" in markdown
    assert "share inside the labelled age range +50.00 points" in markdown and "no age MAE is given" in markdown
    assert f"{metrics['scratch']['age']['mae']:.3f}" not in markdown
    assert figure.axes[1].get_title().startswith("share of ages inside")


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


def test_comparison_rows_follow_the_evaluation_order_not_the_names():
    """test_metrics (a partitioned dataset) loads by name; the table follows evaluation.models,
    the order the paired differences were computed in."""
    headline = {"gender_accuracy": 0.9, "age_mae": 6.0, "n": 3000}
    same = {"n": 3000, "gender_accuracy": 0.0, "gender_accuracy_ci": None, "age_mae": 0.0, "age_mae_ci": None}
    paired = [{"first": "distilled", "second": "transfer", **same}, {"first": "scratch", "second": "transfer", **same},
              {"first": "scratch", "second": "distilled", **same}]
    table, markdown, _ = comparison({"distilled": headline, "scratch": headline, "transfer": headline}, paired)
    assert [r["model"] for r in table["models"]][:3] == ["transfer", "distilled", "scratch"]
    assert markdown.index("| transfer |") < markdown.index("| distilled |") < markdown.index("| scratch |")
