"""The one metrics function, on hand-made predictions whose answers are worked out here."""

import numpy as np
import pandas as pd
import pytest

from age_gender.metrics import Bootstrap, headline, model_metrics, paired_difference
from age_gender.reporting import prediction_table


def _table():
    rows = pd.DataFrame({"file_name": [f"f{i}" for i in range(6)], "cache_index": range(6),
                         "age": [5.0, 25.0, 25.0, 45.0, 45.0, 90.0], "gender": [0, 0, 1, 1, 1, 0],
                         "race": [0, 0, 1, 1, 2, 2]})
    age_pred = np.array([7.0, 25.0, 31.0, 45.0, 30.0, 90.0])      # errors 2, 0, 6, 0, 15, 0
    female = np.array([0.1, 0.6, 0.9, 0.8, 0.4, 0.2])             # predicted 0, 1, 1, 1, 0, 0
    return prediction_table(rows, age_pred, female)


def test_model_metrics_gives_the_documented_keys_and_values():
    m = model_metrics(_table())
    assert m["n"] == 6
    # truth 0,0,1,1,1,0 vs predicted 0,1,1,1,0,0: tn 2, fp 1, fn 1, tp 2
    assert m["gender"]["confusion_matrix"] == [[2, 1], [1, 2]]
    assert m["gender"]["accuracy"] == round(4 / 6, 4)
    assert m["gender"]["precision"] == round(2 / 3, 4) and m["gender"]["recall"] == round(2 / 3, 4)
    assert 0 <= m["gender"]["roc_auc"] <= 1
    assert m["age"]["mae"] == round(23 / 6, 3)
    assert m["age"]["rmse"] == round(float(np.sqrt((4 + 36 + 225) / 6)), 3)
    assert m["age"]["within_5"] == round(4 / 6, 4) and m["age"]["within_10"] == round(5 / 6, 4)
    assert m["age_mae_by_band"] == {"[0, 10)": 2.0, "[20, 30)": 3.0, "[40, 50)": 7.5, "[80, 120)": 0.0}
    assert m["gender_accuracy_by_gender"] == {"male": round(2 / 3, 4), "female": round(2 / 3, 4)}
    assert m["by_race"]["White"] == {"n": 2, "gender_accuracy": 0.5, "age_mae": 1.0}
    assert sum(group["n"] for group in m["by_race"].values()) == 6
    assert headline(m) == {"gender_accuracy": m["gender"]["accuracy"], "age_mae": m["age"]["mae"], "n": 6}


def test_one_gender_has_no_roc_auc_and_an_empty_table_is_refused():
    table = _table()
    assert model_metrics(table[table["gender"] == 1])["gender"]["roc_auc"] is None
    with pytest.raises(ValueError, match="No prediction to score"):
        model_metrics(table.iloc[:0])


def _big_table(n=400, accuracy=0.9, seed=0):
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame({"file_name": [f"f{i}" for i in range(n)], "cache_index": range(n),
                         "age": rng.integers(1, 90, n).astype(float), "gender": rng.integers(0, 2, n),
                         "race": rng.integers(0, 5, n)})
    right = rng.random(n) < accuracy
    female = np.where(right, rows["gender"], 1 - rows["gender"]) * 0.8 + 0.1
    return prediction_table(rows, rows["age"].to_numpy() + rng.normal(0, 7, n), female)


def test_intervals_contain_the_value_shrink_with_more_rows_and_repeat_exactly():
    setting = Bootstrap(resamples=1000, confidence=0.95, seed=3)
    small, large = model_metrics(_big_table(400), setting), model_metrics(_big_table(3000), setting)
    for m in (small, large):
        low, high = m["gender"]["accuracy_ci"]
        assert low < m["gender"]["accuracy"] < high
        low, high = m["age"]["mae_ci"]
        assert low < m["age"]["mae"] < high
        for race in m["by_race"].values():
            assert race["gender_accuracy_ci"][0] <= race["gender_accuracy"] <= race["gender_accuracy_ci"][1]
        assert set(m["age_mae_by_band_ci"]) == set(m["age_mae_by_band"])
        assert set(m["gender_accuracy_by_gender_ci"]) == {"male", "female"}
        assert m["bootstrap"]["resamples"] == 1000
    width = lambda m: m["gender"]["accuracy_ci"][1] - m["gender"]["accuracy_ci"][0]  # noqa: E731
    # the normal approximation's half-width is 1.96 sqrt(p(1-p)/n): about 2.9 points at n 400, 1.1 at 3000
    assert 0.045 < width(small) < 0.075 and 0.016 < width(large) < 0.028
    assert model_metrics(_big_table(400), setting) == small  # seeded: same predictions, same intervals
    assert headline(small)["gender_accuracy_ci"] == small["gender"]["accuracy_ci"]
    assert "accuracy_ci" not in model_metrics(_big_table(400))["gender"]  # no setting, no intervals


def test_a_group_of_one_row_has_no_interval():
    table = _table()
    one = model_metrics(table.iloc[:2].assign(race=[0, 1]), Bootstrap(resamples=200))
    assert one["by_race"]["White"]["gender_accuracy_ci"] is None and one["by_race"]["White"]["n"] == 1


def test_paired_difference_resamples_rows_once_for_both_models():
    setting = Bootstrap(resamples=1000, seed=1)
    a = _big_table(1000, accuracy=0.9, seed=5)
    b = a.copy()
    flip = np.zeros(len(b), bool)
    flip[np.flatnonzero(a["gender_pred"] == a["gender"])[:30]] = True  # b gets 30 more faces wrong
    b.loc[flip, "gender_pred"] = 1 - b.loc[flip, "gender_pred"]
    b["age_pred"] = b["age_pred"] + 1.0
    diff = paired_difference(a, b.sample(frac=1, random_state=0), setting)  # row order does not matter
    assert diff["n"] == 1000 and diff["gender_accuracy"] == 0.03
    low, high = diff["gender_accuracy_ci"]
    # unpaired, the two accuracies' intervals overlap (each about +-1.8 points); paired, the
    # difference is resolved: only the 30 changed rows vary between resamples
    assert 0.015 < low < 0.03 < high < 0.045
    assert diff["age_mae_ci"][0] < diff["age_mae"] < diff["age_mae_ci"][1] < 0
    with pytest.raises(ValueError, match="different faces"):
        paired_difference(a, b.iloc[:-1], setting)


def test_bootstrap_setting_from_parameters():
    assert Bootstrap.from_params({"bootstrap": {"resamples": 2000, "confidence": 0.9, "seed": 4}}) == \
        Bootstrap(2000, 0.9, 4)
    assert Bootstrap.from_params({"bootstrap": {"resamples": 0, "confidence": 0.95, "seed": 0}}) is None
    assert Bootstrap.from_params(None) is None


def _scored(name: str, ages, females, files=("a", "b", "c")) -> pd.DataFrame:
    rows = pd.DataFrame({"file_name": list(files), "cache_index": ["abcd".index(f) for f in files], "age": [20, 30, 40],
                         "gender": [0, 1, 1], "race": [0, 1, 2]})
    return prediction_table(rows, np.asarray(ages, float), np.asarray(females, float)).assign(model=name)


def test_an_ensemble_is_the_mean_of_its_members_face_by_face():
    from age_gender.reporting import ensemble_predictions

    first = _scored("scratch", [10, 30, 50], [0.2, 0.9, 0.45])
    second = _scored("transfer", [50, 36, 30], [0.6, 0.7, 0.35], files=("c", "b", "a"))  # rows matched by face
    second["age"] = [40, 30, 20]
    table, kept = ensemble_predictions(pd.concat([first, second], ignore_index=True),
                                       {"both": ["scratch", "transfer"], "with_distilled": ["scratch", "distilled"]})
    assert kept == {"both": ["scratch", "transfer"]}  # distilled was not judged: left out
    both = table[table["model"] == "both"].set_index("file_name").sort_index()
    assert both["age_pred"].tolist() == [20.0, 33.0, 50.0]
    assert both["female_prob"].tolist() == pytest.approx([0.275, 0.8, 0.525])
    assert both["gender_pred"].tolist() == [0, 1, 1] and both["age"].tolist() == [20, 30, 40]
    assert list(table.columns) == list(first.columns) and len(table) == 9
    # null switches an entry off (an environment's way to drop conf/base's), and no ensemble is judged
    off, kept = ensemble_predictions(pd.concat([first, second], ignore_index=True), {"both": None})
    assert kept == {} and len(off) == 6
    assert ensemble_predictions(first, None)[1] == {}


def test_members_scored_on_different_faces_are_refused():
    from age_gender.reporting import ensemble_predictions

    mixed = pd.concat([_scored("scratch", [1, 2, 3], [0.1, 0.2, 0.3]),
                       _scored("transfer", [1, 2, 3], [0.1, 0.2, 0.3], files=("a", "b", "d"))])
    with pytest.raises(ValueError, match="not scored on the same faces"):
        ensemble_predictions(mixed, {"both": ["scratch", "transfer"]})
    twice = pd.concat([_scored("scratch", [1, 2, 3], [0.1, 0.2, 0.3], files=("a", "a", "b")),
                       _scored("transfer", [1, 2, 3], [0.1, 0.2, 0.3], files=("a", "b", "b"))])
    with pytest.raises(ValueError, match="not scored on the same faces"):  # a face twice in one member
        ensemble_predictions(twice, {"both": ["scratch", "transfer"]})


def test_an_ensembles_training_info_comes_from_its_members():
    from age_gender.reporting import ensemble_training_info

    infos = {"scratch": {"split_id": "s1", "train_seconds": 100.25, "input_size": 64, "pretrained": False},
             "transfer": {"split_id": "s1", "train_seconds": 200.5, "input_size": 128, "pretrained": True,
                          "out_of_time": False}}
    info = ensemble_training_info(["scratch", "transfer"], infos)
    assert info["ensemble_of"] == ["scratch", "transfer"] and info["split_id"] == "s1"
    assert info["train_seconds"] == 300.8 and info["pretrained"] is True and info["out_of_time"] is False
    assert info["input_size"] == "64 (scratch), 128 (transfer)"
    assert ensemble_training_info(["scratch", "transfer"], {**infos, "transfer": None}) is None
    other = {**infos, "transfer": {**infos["transfer"], "split_id": "s2"}}
    assert ensemble_training_info(["scratch", "transfer"], other)["split_id"] is None  # check_trained_on refuses
