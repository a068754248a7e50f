from kedro.pipeline import Pipeline, node

from age_gender.lineage import stamp_cache

from .nodes import check_faces, decode_faces, plot_age_distribution, select_faces


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(decode_faces, ["utkface_raw", "params:ingestion"],
                 ["decoded_manifest", "decoded_images", "decode_findings"], name="decode_faces"),
            node(check_faces, ["decoded_images", "params:ingestion"], "face_found",
                 name="check_faces"),
            node(select_faces,
                 ["decoded_manifest", "decoded_images", "face_found", "decode_findings",
                  "params:ingestion"],
                 ["face_manifest", "decoded_cache", "ingestion_report"], name="select_faces"),
            # the cache is written last, stamped with this ingestion's identity (age_gender.lineage)
            node(stamp_cache, ["face_manifest", "decoded_cache"], "face_cache", name="stamp_cache"),
            node(plot_age_distribution, "face_manifest", "age_distribution_plot",
                 name="plot_age_distribution"),
        ]
    )
