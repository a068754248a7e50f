import json, sys, pandas as pd
B, A = sys.argv[1], sys.argv[2]
b = json.load(open(f"{B}/evaluation_metrics.json")); a = json.load(open(f"{A}/evaluation_metrics.json"))
print("splits identical:", pd.read_parquet(f"{B}/face_splits.parquet").equals(pd.read_parquet(f"{A}/face_splits.parquet")))
print("metric keys identical:", all(set(b[m]) == set(a[m]) and set(b[m]["gender"]) == set(a[m]["gender"]) and set(b[m]["age"]) == set(a[m]["age"]) for m in b))
for m in b:
    row = [f"{g}.{k}: {b[m][g][k]} -> {a[m][g][k]}" for g in ("gender", "age") for k in b[m][g] if k != "confusion_matrix"]
    row.append(f"cm {b[m]['gender']['confusion_matrix']} -> {a[m]['gender']['confusion_matrix']}")
    print(m, "n", b[m]["n"], a[m]["n"], "|", "; ".join(row))
    print("   identical:", b[m] == a[m])
hb = json.load(open(f"{B}/transfer_best_head.json")); ha = json.load(open(f"{A}/transfer_best_head.json"))
print("best head", {k: hb[k] for k in ("structure", "units", "learning_rate")}, {k: ha[k] for k in ("structure", "units", "learning_rate")})
