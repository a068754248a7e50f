import io

import numpy as np
import pytest
from PIL import Image

from age_gender.datasets import FaceSource
from age_gender.pipelines.ingestion.nodes import check_faces, decode_faces, select_faces

PARAMS = {"image_sizes": [32, 48], "max_pixels": 10**6, "workers": 1, "exclude_files": [],
          "conflicting_duplicates": "drop",
          "face_check": {"enabled": True, "drop_suspects": False, "min_neighbors": 3}}


def _good(archive_members, count):
    from age_gender.faces import UTKFACE_NAME
    return [(n, d) for n, d in archive_members.items() if UTKFACE_NAME.match(n.split("/")[-1])][:count]


def SAME_LABEL_COPY(name: str) -> str:  # noqa: N802  (same labels, sorts after the original)
    return "_".join(name.split("_")[:3]) + "_99999999999999999.jpg.chip.jpg"


@pytest.fixture()
def messy_source(archive_members):
    good = _good(archive_members, 30)
    gray = io.BytesIO()
    Image.open(io.BytesIO(good[1][1])).convert("L").save(gray, format="PNG")
    members = list(good[2:]) + [
        ("UTKFace/40_1_0_20170109142408075.jpg.chip.jpg", good[0][1][:400]),      # truncated
        ("UTKFace/41_1_0_20170109142408076.jpg.chip.jpg", b""),                   # zero bytes
        ("UTKFace/42_0_1_20170109142408077.jpg.chip.jpg", gray.getvalue()),       # grayscale PNG
        (SAME_LABEL_COPY(good[2][0]), good[2][1]),                                 # duplicate, same labels
        ("UTKFace/1_1_4_20170109142408079.jpg.chip.jpg", good[4][1]),             # duplicate, other labels
        ("UTKFace/39_1_20170116174525125.jpg.chip.jpg", good[3][1]),              # malformed name
    ]
    return FaceSource("test", members=members, refused=[("../evil.jpg", "unsafe_path")])


def test_every_file_is_accounted_for_and_caches_align(messy_source):
    manifest, images, findings = decode_faces(messy_source, PARAMS)
    found = check_faces(images, PARAMS)
    final, cache, report = select_faces(manifest, images, found, findings, PARAMS)
    good = [m for m, _ in messy_source.members]
    assert report["files_seen"] == 35
    assert report["kept"] + sum(len(v) for v in report["set_aside"].values()) == 35
    assert report["set_aside"] == {
        "duplicate": [SAME_LABEL_COPY(good[0])],
        "duplicate_conflicting_labels": sorted([good[2], "UTKFace/1_1_4_20170109142408079.jpg.chip.jpg"]),
        "empty_file": ["UTKFace/41_1_0_20170109142408076.jpg.chip.jpg"],
        "malformed_name": ["UTKFace/39_1_20170116174525125.jpg.chip.jpg"],
        "unreadable_image": ["UTKFace/40_1_0_20170109142408075.jpg.chip.jpg"],
        "unsafe_path": ["../evil.jpg"]}
    assert report["kept"] == len(final) == 28
    assert "L" in report["converted"]["UTKFace/42_0_1_20170109142408077.jpg.chip.jpg"]
    assert set(cache) == {"32px", "48px"} and cache["32px"].shape == (28, 32, 32, 3)
    # alignment: row i of each cache is the decoded image of manifest row i
    from age_gender.faces import decode_face
    lookup = dict(messy_source.members)
    for i in (0, 7, 27):
        expected = decode_face(lookup[final.loc[i, "member"]], (32, 48), 10**6).arrays
        assert np.array_equal(cache["32px"][i], expected[32])
        assert np.array_equal(cache["48px"][i], expected[48])
    assert final["file_name"].is_monotonic_increasing and final["sha256"].is_unique


def test_exclusion_list_and_dropping_suspects(messy_source):
    manifest, images, findings = decode_faces(messy_source, PARAMS)
    found = np.ones(len(manifest), dtype=bool)
    found[[3, 5]] = False
    params = {**PARAMS, "exclude_files": [manifest.loc[0, "file_name"]],
              "face_check": {**PARAMS["face_check"], "drop_suspects": True}}
    final, cache, report = select_faces(manifest, images, found, findings, params)
    assert report["set_aside"]["excluded_by_list"] == [manifest.loc[0, "member"]]
    assert report["set_aside"]["no_face_detected"] == sorted(manifest.loc[[3, 5], "member"])
    assert len(final) == len(manifest) - 3 == len(cache["32px"])
    assert report["face_check"]["suspects"] == 2


@pytest.mark.parametrize("bad", [{"image_sizes": []}, {"image_sizes": [8]}, {"workers": 0},
                                 {"conflicting_duplicates": "guess"}, {"min_side": 0},
                                 {"min_side": "32"}, {"min_side": True}])
def test_wrong_config_values_are_clear_errors(messy_source, bad):
    with pytest.raises(ValueError, match="ingestion"):
        decode_faces(messy_source, {**PARAMS, **bad})


def test_keep_first_keeps_one_copy_of_a_conflicting_duplicate_and_reports_it(messy_source):
    manifest, images, findings = decode_faces(messy_source, {**PARAMS, "conflicting_duplicates": "keep_first"})
    conflicting = "UTKFace/1_1_4_20170109142408079.jpg.chip.jpg"
    original = messy_source.members[2][0]
    kept_first = min(conflicting, original)
    dropped = max(conflicting, original)
    assert kept_first in set(manifest["member"]) and dropped not in set(manifest["member"])
    assert findings["duplicate_label_conflicts"] == {dropped: kept_first}
    assert "other labels" in findings["details"][dropped]
