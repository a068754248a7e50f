"""The fairness report and the model card on hand-made prediction tables whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from age_gender.fairness import (
    assign_bands,
    band_labels,
    fairness_heatmap,
    fairness_report,
    model_card,
    weak_groups,
)
from age_gender.metrics import Bootstrap, model_metrics

BANDS = [0, 13, 20, 40, 60, 70]


def _rows(n: int, race: int, gender: int, age: int, right: int, error: float) -> pd.DataFrame:
    """n faces of one cell, ``right`` of them with the right gender, every age off by ``error``."""
    predicted = np.where(np.arange(n) < right, gender, 1 - gender)
    return pd.DataFrame({"age": age, "gender": gender, "race": race, "age_pred": age + error,
                         "gender_pred": predicted, "female_prob": predicted.astype(float)})


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.concat([_rows(40, 0, 0, 25, 40, 2.0),    # White male 20-39: all right, 2 years off
                      _rows(40, 1, 1, 25, 30, 6.0),    # Black female 20-39: 75 %, 6 years off
                      _rows(10, 2, 0, 5, 0, -10.0),    # Asian male children: too few (10 < 30)
                      _rows(40, 0, 1, 75, 36, 4.0)],   # White female 70+: 90 %, 4 years off
                     ignore_index=True)


def test_band_labels_and_assignment():
    assert band_labels(BANDS) == ["0-12", "13-19", "20-39", "40-59", "60-69", "70+"]
    bands = assign_bands(pd.Series([0, 12, 13, 69, 70, 116]), BANDS)
    assert list(bands) == ["0-12", "0-12", "13-19", "60-69", "70+", "70+"]
    for bad in ([5, 10], [0, 20, 20], []):
        with pytest.raises(ValueError, match="increasing integers starting at 0"):
            band_labels(bad)


def test_cells_counts_and_marks(table):
    report = fairness_report(table, None, BANDS, min_count=30)
    assert report["n"] == 130 and len(report["cells"]) == 5 * 2 * 6  # every cell, empty ones too
    cells = {(c["race"], c["gender"], c["age_band"]): c for c in report["cells"]}
    assert cells[("White", "male", "20-39")] == {"race": "White", "gender": "male", "age_band": "20-39", "n": 40,
                                                 "too_few": False, "gender_accuracy": 1.0, "age_mae": 2.0}
    assert cells[("Black", "female", "20-39")]["gender_accuracy"] == 0.75
    small = cells[("Asian", "male", "0-12")]
    assert small["n"] == 10 and small["too_few"] and small["gender_accuracy"] == 0.0 and small["age_mae"] == 10.0
    empty = cells[("Indian", "female", "40-59")]
    assert empty["n"] == 0 and empty["too_few"] and empty["gender_accuracy"] is None
    assert report["too_few_cells"] == 60 - 3


def test_worst_group_and_gap_skip_small_groups(table):
    report = fairness_report(table, Bootstrap(resamples=500, confidence=0.95, seed=0), BANDS, min_count=30)
    worst, gap = report["worst"]["cell"], report["gap"]["cell"]
    # the Asian children cell is worse (0 %, 10 years) but has 10 faces: marked, never chosen
    assert worst["gender_accuracy"]["group"] == "Black / female / 20-39"
    assert gap["gender_accuracy"]["best"] == "White / male / 20-39" and gap["gender_accuracy"]["value"] == -0.25
    low, high = gap["gender_accuracy"]["ci"]
    assert low <= -0.25 <= high and high < 0  # 30/40 vs 40/40: the gap is real at 95 %
    assert gap["age_mae"] == {"worst": "Black / female / 20-39", "best": "White / male / 20-39", "value": 4.0,
                              "ci": [4.0, 4.0]}  # constant errors: no spread to resample
    assert report["worst"]["race"]["age_mae"]["group"] == "Black"
    assert report["gap"]["gender"]["gender_accuracy"]["value"] == round(40 / 50 - 66 / 80, 4)  # male 40/50 vs female 66/80


def test_children_and_elderly_on_their_own(table):
    report = fairness_report(table, None, BANDS, min_count=30)
    assert report["children"]["ages"] == "0-12" and report["children"]["n"] == 10
    assert report["children"]["gender_accuracy"] == 0.0 and report["children"]["age_mae"] == 10.0
    assert report["children"]["too_few"]
    assert report["elderly"]["ages"] == "70+" and report["elderly"]["n"] == 40
    assert report["elderly"]["gender_accuracy"] == 0.9 and report["elderly"]["by_race"]["White"]["n"] == 40


def test_refuses_tables_it_cannot_judge(table):
    with pytest.raises(ValueError, match="lacks race"):
        fairness_report(table.drop(columns="race"), None, BANDS, 30)
    with pytest.raises(ValueError, match="empty"):
        fairness_report(table.iloc[:0], None, BANDS, 30)


def test_weak_groups_are_computed(table):
    setting = Bootstrap(resamples=500, confidence=0.95, seed=0)
    lines = weak_groups(fairness_report(table, setting, BANDS, min_count=30))
    # Black faces: 6 years off everywhere vs 4.46 overall, a zero-width interval above it
    assert any(line.startswith("Black (race, n 40): 6.00 y") for line in lines)
    assert not any(line.startswith("White (race") and "y" in line for line in lines)
    assert not any("Asian" in line for line in lines)  # too few faces to call


def test_model_card(table):
    setting = Bootstrap(resamples=500, confidence=0.95, seed=0)
    metrics, report = model_metrics(table, setting), fairness_report(table, setting, BANDS, 30)
    data = {"ingestion_id": "a" * 64, "split_id": "b" * 64, "split_sizes": {"test": 130}}
    card = model_card("scratch", metrics, report, {"split_id": "b" * 64, "input_size": 64}, data)
    assert "# Model card: `scratch`" in card and f"split id `{'b' * 64}`" in card
    assert "Not measured" in card and "Black (race, n 40)" in card and "| Black | female |" in card
    detected = model_card("scratch", metrics, report, None, data,
                          {"detector": "mtcnn", "found_by_race_measured": {
                              "by_race": {"White": 0.95, "Black": 0.7}, "largest_gap": 0.25, "n_per_group": 60,
                              "measured_on": "synthetic photos"}})
    assert "| White | 95.0 % | 60 |" in detected and "| Black | 70.0 % | 60 |" in detected
    assert "Detector: mtcnn" in detected and "Largest gap between groups: 25.0 points" in detected
    with pytest.raises(ValueError, match="different predictions"):
        model_card("scratch", metrics, fairness_report(table.iloc[:100], None, BANDS, 30), None, data)
    assert "Distilled" not in card and "Protocol" not in card


def test_model_card_of_a_distilled_model_names_its_teacher(table):
    """A reader of model_cards/distilled.md learns that it also trained on teacher-labelled faces."""
    metrics, report = model_metrics(table, None), fairness_report(table, None, BANDS, 30)
    info = {"split_id": "b" * 64, "input_size": 32, "teacher_labelled_faces": 200, "true_labelled_faces": 270,
            "gender_targets": "soft", "protocol": "NOT the study's from-scratch protocol: teacher labels",
            "teacher": {"model": "transfer", "backbone": "mobilenet_v2", "pretrained": True, "input_size": 32}}
    card = model_card("distilled", metrics, report, info, {"split_sizes": {"test": 130}})
    assert ("- Distilled: trained on 270 faces with their true labels plus 200 faces of the `unused` split "
            "labelled by the teacher (model transfer, backbone mobilenet_v2, pretrained True, input_size 32; "
            "gender targets soft).") in card
    assert "- Protocol: NOT the study's from-scratch protocol: teacher labels." in card


def test_heatmap_has_two_panels_per_model(table):
    report = fairness_report(table, None, BANDS, 30)
    figure = fairness_heatmap({"scratch": report, "transfer": report})
    assert len(figure.axes) == 2 * 2 * 2  # two heat-maps per model, each with its colour bar


def test_groups_that_differ_only_by_chance_are_not_called_weak():
    rng = np.random.default_rng(0)
    n = 3000
    table = pd.DataFrame({"age": rng.integers(1, 100, n), "gender": rng.integers(0, 2, n),
                          "race": rng.choice(5, n, p=[0.42, 0.19, 0.15, 0.17, 0.07])})
    table["age_pred"] = table["age"] + rng.normal(0, 8, n)  # every group: the same error law
    table["gender_pred"] = np.where(rng.random(n) < 0.88, table["gender"], 1 - table["gender"])
    report = fairness_report(table, Bootstrap(resamples=1000, confidence=0.95, seed=0), BANDS, min_count=30)
    assert weak_groups(report) == []  # plain 95 % intervals called 3 groups weak on this table
    assert report["worst"]["cell"]["gender_accuracy"] is not None  # a worst cell is still named
