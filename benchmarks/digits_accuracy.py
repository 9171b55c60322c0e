"""Final test accuracy and seconds per epoch of every method on the built-in digits data.

    python benchmarks/digits_accuracy.py --levels 0.4 0.8 --seeds 1 2 3 --epochs 30 --out digits.csv

Each (level, seed) pair gives every method the identical noisy data (same data seed).
"""
from __future__ import annotations

import argparse
import csv
import sys
import time

import torch

from ebomlc import TrainConfig
from ebomlc.train import Trainer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["ce", "mlc", "mlcbome", "ebomlc"])
    p.add_argument("--levels", nargs="+", type=float, default=[0.4, 0.8])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--gold_fraction", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default="digits_accuracy.csv")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    for level in a.levels:
        for seed in a.seeds:
            for method in a.methods:
                t = Trainer(TrainConfig(method=method, dataset="digits", corruption_level=level, seed=seed,
                                        epochs=a.epochs, gold_fraction=a.gold_fraction, device="cpu"))
                while t.epoch < a.epochs:
                    row = t.run_epoch()
                s = t.summary()
                rows.append({"method": method, "level": level, "seed": seed, "final_test_acc": s["final_test_acc"],
                             "best_test_acc": s["best_test_acc"], "seconds_per_epoch": s["seconds_per_epoch"],
                             "lc_acc": row.get("lc_acc")})
                print(rows[-1], flush=True)
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    import pandas as pd

    df = pd.DataFrame(rows)
    table = df.groupby(["method", "level"]).agg(acc_mean=("final_test_acc", "mean"), acc_std=("final_test_acc", "std"),
                                                s_per_epoch=("seconds_per_epoch", "mean"))
    print(table.round(4).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
