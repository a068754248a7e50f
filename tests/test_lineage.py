"""Lineage: the split table and the image cache name the ingestion they came from, and a consumer
refuses to mix two ingestions (issue 11, item 1)."""

import shutil

import numpy as np
import pandas as pd
import pytest

from age_gender.datasets import FaceCacheDataset
from age_gender.lineage import (
    FaceCache,
    LineageError,
    check_manifest_matches_cache,
    check_same_ingestion,
    ingestion_id,
    stamp_cache,
    stamp_splits,
)
from age_gender.training import select_split
from tests.conftest import make_project, run_kedro, write_tar


def _manifest(n=5):
    return pd.DataFrame({"file_name": [f"{i}_0_0_x.jpg" for i in range(10, 10 + n)],
                         "sha256": [f"{i:064x}" for i in range(n)], "age": list(range(10, 10 + n)),
                         "gender": [i % 2 for i in range(n)], "race": [0] * n})


def test_ingestion_id_changes_with_every_part_of_the_identity():
    base = _manifest()
    first = ingestion_id(base, [32, 48])
    assert first == ingestion_id(base.copy(), [48, 32])  # same content, sizes in any order
    assert first == ingestion_id(base.astype({"age": "int32"}), [32, 48])  # dtype is not content
    changed = {
        "one face added first": pd.concat([_manifest(1).assign(file_name="0_0_0_a.jpg"), base]),
        "one face removed": base.iloc[1:],
        "rows reordered": base.iloc[::-1],
        "other bytes": base.assign(sha256=base["sha256"].str.replace("0", "f", n=1)),
        "other age": base.assign(age=base["age"] + (base.index == 2)),
        "other gender": base.assign(gender=1 - base["gender"]),
        "other race": base.assign(race=1),
    }
    for why, manifest in changed.items():
        assert ingestion_id(manifest, [32, 48]) != first, why
    assert ingestion_id(base, [32]) != first


def test_consumer_refuses_splits_of_another_ingestion_with_one_line():
    manifest = _manifest()
    cache = stamp_cache(manifest, {"32px": np.zeros((5, 32, 32, 3), np.uint8)})
    splits = pd.DataFrame({"file_name": manifest["file_name"], "cache_index": range(5),
                           "age": manifest["age"], "gender": manifest["gender"],
                           "split": ["train"] * 5})
    assert check_same_ingestion(cache, stamp_splits(splits, cache.ingestion_id, {})) == cache.ingestion_id
    assert len(select_split(cache, stamp_splits(splits, cache.ingestion_id, {}), 32, ["train"])) == 5

    other = stamp_splits(splits, "ab" * 32, {})
    with pytest.raises(LineageError) as error:
        select_split(cache, other, 32, ["train"])
    message = str(error.value)
    assert "\n" not in message
    assert message == (f"face_splits was made from another ingestion (id {'ab' * 6} vs "
                       f"{cache.ingestion_id[:12]} of face_cache): rerun `kedro run --pipeline split`")
    with pytest.raises(LineageError, match="face_splits carries no ingestion id.*pipeline split"):
        check_same_ingestion(cache, splits)
    with pytest.raises(LineageError, match="face_cache carries no ingestion identity.*ingestion"):
        check_same_ingestion(FaceCache(dict(cache), None), stamp_splits(splits, cache.ingestion_id, {}))
    # arrays built in memory (no identity at all) are not checked
    assert check_same_ingestion({"32px": np.zeros((5, 32, 32, 3))}, splits) is None


def test_split_refuses_a_manifest_the_cache_was_not_written_with():
    manifest = _manifest()
    cache = stamp_cache(manifest, {"32px": np.zeros((5, 32, 32, 3), np.uint8)})
    assert check_manifest_matches_cache(manifest, cache) == cache.ingestion_id
    with pytest.raises(LineageError, match=r"different ingestions.*rerun `kedro run --pipeline ingestion`"):
        check_manifest_matches_cache(manifest.iloc[1:], cache)
    with pytest.raises(LineageError, match="rows"):
        stamp_cache(manifest.iloc[1:], {"32px": np.zeros((5, 32, 32, 3), np.uint8)})


def test_face_cache_dataset_round_trips_identity_and_refuses_plain_mappings(tmp_path):
    manifest = _manifest()
    images = np.arange(5 * 8 * 8 * 3, dtype=np.uint8).reshape(5, 8, 8, 3)
    dataset = FaceCacheDataset(path=str(tmp_path / "face_cache"))
    dataset.save(stamp_cache(manifest, {"8px": images}))
    loaded = dataset.load()
    assert isinstance(loaded, FaceCache) and list(loaded) == ["8px"]
    assert loaded.ingestion_id == ingestion_id(manifest, [8])
    assert np.array_equal(loaded["8px"](), images)
    with pytest.raises(Exception, match="identity"):
        dataset.save({"8px": images})
    assert np.array_equal(dataset.load()["8px"](), images)  # the refused save changed nothing


# --- through Kedro, on real archive images ------------------------------------------------------

PARAMS = {"ingestion": {"image_sizes": [32, 48], "face_check": {"enabled": False}, "workers": 1},
          "split": {"test_size": 40, "subset_size": 200},
          "scratch_training": {"input_size": 32, "epochs": 1, "batch_size": 32, "width_multiplier": 0.125},
          "scratch": {"architecture": {"conv_pairs": 2, "dense_layers": 1, "dense_units": 8,
                                       "split_point": 1}}}


@pytest.fixture(scope="module")
def faces(archive_members):
    """400 well-named real faces, and one more real face renamed so that it sorts first."""
    from age_gender.faces import UTKFACE_NAME

    good = sorted((n, b) for n, b in archive_members.items() if UTKFACE_NAME.match(n.rsplit("/", 1)[-1]))
    first_400, spare = good[:400], good[400][1]
    assert len(first_400) == 400
    early = "UTKFace/100_0_0_19000101000000000.jpg.chip.jpg"
    assert early < first_400[0][0]
    return dict(first_400), (early, spare)


@pytest.mark.pipeline
def test_stale_split_after_reingestion_is_refused(tmp_path, faces, monkeypatch):
    """The issue's case: ingest 400, split, re-ingest the same 400 plus one face that sorts first,
    run `scratch` without `split`: refused before any training, naming `split`. The same for a
    re-ingestion that removes faces and one that changes image_sizes."""
    members, (early, spare) = faces
    project = make_project(tmp_path / "project")
    archive = tmp_path / "faces.tar.gz"
    monkeypatch.setenv("UTKFACE_ARCHIVE", str(archive))

    write_tar(archive, members)
    run_kedro(project, "ingestion", PARAMS)
    run_kedro(project, "split", PARAMS)
    splits_file = project / "data" / "05_model_input" / "face_splits.parquet"
    stale = pd.read_parquet(splits_file)
    assert stale["ingestion_id"].nunique() == 1

    cases = {
        "one face more, sorting first": ({early: spare, **members}, PARAMS),
        "faces removed": (dict(list(members.items())[50:]), PARAMS),
        "other image_sizes": (members, {**PARAMS, "ingestion": {**PARAMS["ingestion"], "image_sizes": [32]}}),
    }
    for why, (content, params) in cases.items():
        write_tar(archive, content)
        run_kedro(project, "ingestion", params)
        with pytest.raises(Exception) as error:
            run_kedro(project, "scratch", params)
        cause = error.value
        while not isinstance(cause, LineageError) and cause.__cause__ is not None:
            cause = cause.__cause__
        assert isinstance(cause, LineageError), (why, error.value)
        assert "face_splits was made from another ingestion" in str(cause), why
        assert str(cause).endswith("rerun `kedro run --pipeline split`"), why
        assert not (project / "data" / "06_models" / "scratch.keras").exists(), why
        assert pd.read_parquet(splits_file).equals(stale), why  # nothing was rewritten

    # after `split`, the consumer's check passes
    run_kedro(project, "split", PARAMS)
    catalog_cache = FaceCacheDataset(path=str(project / "data" / "03_primary" / "face_cache")).load()
    fresh = pd.read_parquet(splits_file)
    assert check_same_ingestion(catalog_cache, fresh) == catalog_cache.ingestion_id


@pytest.mark.pipeline
def test_split_refuses_a_manifest_newer_than_the_cache(tmp_path, faces, monkeypatch):
    """A run killed between writing face_manifest and face_cache leaves them from two ingestions:
    `split` refuses and names `ingestion`."""
    members, _ = faces
    project = make_project(tmp_path / "project")
    archive = tmp_path / "faces.tar.gz"
    monkeypatch.setenv("UTKFACE_ARCHIVE", str(archive))
    primary = project / "data" / "03_primary"
    write_tar(archive, dict(list(members.items())[:120]))
    run_kedro(project, "ingestion", PARAMS)
    old_manifest = (primary / "face_manifest.parquet").read_bytes()
    write_tar(archive, dict(list(members.items())[:130]))
    run_kedro(project, "ingestion", PARAMS)
    (primary / "face_manifest.parquet").write_bytes(old_manifest)
    with pytest.raises(Exception) as error:
        run_kedro(project, "split", {**PARAMS, "split": {"test_size": 10, "subset_size": 50}})
    assert "face_manifest and face_cache come from different ingestions" in str(error.value)
    assert "rerun `kedro run --pipeline ingestion`" in str(error.value)
    assert not (project / "data" / "05_model_input" / "face_splits.parquet").exists()
    shutil.rmtree(project)


def test_last_line_of_a_failed_run_names_cause_and_fix():
    from kedro.io import DatasetError

    from age_gender.hooks import last_line

    try:
        try:
            raise LineageError("face_splits was made from another ingestion (id ab vs cd)",
                               "rerun `kedro run --pipeline split`")
        except LineageError as inner:
            raise DatasetError("Failed while loading data from dataset") from inner
    except DatasetError as error:
        wrapped = error
    assert last_line(wrapped) == ("ERROR: face_splits was made from another ingestion (id ab vs cd). "
                                  "Fix: rerun `kedro run --pipeline split`.")
    line = last_line(KeyError("age"), node="split_faces")
    assert line.startswith("ERROR in node split_faces: KeyError: 'age'. Fix: ") and "\n" not in line


def test_fix_commands_carry_the_runs_env():
    """`--env smoke` refused with `kedro run --pipeline transfer` as the fix would send a user to an
    hour of conf/base training: the commands of the last line carry the run's --env."""
    from age_gender.hooks import last_line

    error = LineageError("the teacher was trained on another split table",
                         "rerun `kedro run --pipeline transfer`, then `kedro run --pipeline distill`")
    assert last_line(error, env="smoke") == (
        "ERROR: the teacher was trained on another split table. Fix: rerun `kedro run --env smoke --pipeline "
        "transfer`, then `kedro run --env smoke --pipeline distill`.")
    for env in (None, "local"):
        assert last_line(error, env=env).endswith("Fix: rerun `kedro run --pipeline transfer`, then "
                                                  "`kedro run --pipeline distill`.")
    already = LineageError("x", "run `kedro run --env smoke --pipeline split` first")
    assert last_line(already, env="smoke") == "ERROR: x. Fix: run `kedro run --env smoke --pipeline split` first."


def test_split_id_follows_the_split_settings_and_models_record_theirs():
    from age_gender.lineage import check_split_settings, check_trained_on, splits_split_id

    splits = stamp_splits(pd.DataFrame({"cache_index": [0, 1], "split": ["train", "test"]}), "ab" * 32,
                          {"seed": 42, "test_size": 1})
    check_split_settings(splits, {"test_size": 1, "seed": 42})  # same settings, any key order
    with pytest.raises(LineageError, match="drawn with other split settings"):
        check_split_settings(splits, {"seed": 7, "test_size": 1})
    check_trained_on(splits, "scratch", {"split_id": splits_split_id(splits)})
    check_trained_on(splits, "scratch", None)  # not trained: nothing to judge
    with pytest.raises(LineageError, match=r"scratch_model records no split id"):
        check_trained_on(splits, "scratch", {"epochs_run": 3})
    with pytest.raises(LineageError, match=r"transfer_model was trained on another split table"):
        check_trained_on(splits, "transfer", {"split_id": "cd" * 32})
