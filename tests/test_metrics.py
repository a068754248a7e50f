"""The one metrics function, on hand-made predictions whose answers are worked out here."""

import numpy as np
import pandas as pd
import pytest

from age_gender.metrics import headline, model_metrics
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
