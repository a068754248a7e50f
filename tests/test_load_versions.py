"""--load-versions is checked before the first node: a typo or a missing version is refused."""

import pytest
from kedro.io import DataCatalog, Version
from kedro.pipeline import Pipeline, node
from kedro_datasets.json import JSONDataset

from age_gender.hooks import check_load_versions
from age_gender.lineage import ActionableError


def _catalog(tmp_path):
    catalog = DataCatalog({
        "scratch_model": JSONDataset(filepath=str(tmp_path / "m.json"), version=Version(None, None)),
        "face_splits": JSONDataset(filepath=str(tmp_path / "s.json")),
    })
    catalog.save("scratch_model", {"a": 1})
    return catalog


PIPELINE = Pipeline([node(lambda m, s: None, ["scratch_model", "face_splits"], None, name="judge")])


def test_an_existing_version_passes(tmp_path):
    catalog = _catalog(tmp_path)
    version = sorted(p.name for p in (tmp_path / "m.json").iterdir())[-1]
    check_load_versions({"scratch_model": version}, PIPELINE, catalog)
    check_load_versions(None, PIPELINE, catalog)


@pytest.mark.parametrize("load_versions, message", [
    ({"scratch_modle": "2026-01-01T00.00.00.000Z"}, r"'scratch_modle', which this run does not read \(did you mean scratch_model\?\)"),
    ({"face_splits": "2026-01-01T00.00.00.000Z"}, "'face_splits', which is not versioned"),
    ({"scratch_model": "2020-01-01T00.00.00.000Z"}, r"scratch_model has no version '2020-01-01T00.00.00.000Z'"),
])
def test_a_typo_or_a_missing_version_is_refused(tmp_path, load_versions, message):
    with pytest.raises(ActionableError, match=message):
        check_load_versions(load_versions, PIPELINE, _catalog(tmp_path))
