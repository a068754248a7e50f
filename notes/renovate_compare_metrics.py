"""Compare two runs of renovate_compare_run.py: split tables, metric keys and values per model.

usage: python renovate_compare_metrics.py BEFORE_DIR AFTER_DIR
"""

import json
import sys

import pandas as pd


def main(before: str, after: str) -> None:
    b = json.load(open(f"{before}/evaluation_metrics.json"))
    a = json.load(open(f"{after}/evaluation_metrics.json"))
    same_split = pd.read_parquet(f"{before}/face_splits.parquet").equals(pd.read_parquet(f"{after}/face_splits.parquet"))
    print("splits identical:", same_split)
    print("metric keys identical:", all(set(b[m]) == set(a[m]) and set(b[m]["gender"]) == set(a[m]["gender"])
                                        and set(b[m]["age"]) == set(a[m]["age"]) for m in b))
    for m in b:
        row = [f"{g}.{k}: {b[m][g][k]} -> {a[m][g][k]}" for g in ("gender", "age") for k in b[m][g]]
        print(m, f"n {b[m]['n']} -> {a[m]['n']} |", "; ".join(row))
        print("   identical:", b[m] == a[m])
    heads = [json.load(open(f"{d}/transfer_best_head.json")) for d in (before, after)]
    print("best head", *[{k: h[k] for k in ("structure", "units", "learning_rate")} for h in heads])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
