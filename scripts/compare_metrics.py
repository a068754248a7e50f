"""Compare two output folders of ``scripts/compare_run.py`` (e.g. two commits of the code).

Prints whether the split tables are identical, whether ``evaluation_metrics.json`` has the same
keys, every gender and age metric per model as ``before -> after`` with ``identical: True/False``,
and Hyperband's best head of each. Reads ``evaluation_metrics.json``, ``face_splits.parquet`` and
``transfer_best_head.json`` from both folders (``FileNotFoundError`` if a run did not finish).
"""

import argparse
import json

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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="output folder of the first compare_run.py run")
    parser.add_argument("after", help="output folder of the second compare_run.py run")
    args = parser.parse_args()
    main(args.before, args.after)
