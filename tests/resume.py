"""A run killed during its third epoch and resumed from its checkpoint, against the same run uninterrupted."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ebomlc import TrainConfig
from ebomlc.train import Trainer, train_run

TIMES = ("epoch_time", "train_time", "eval_time")  # the only fields a resumed history may differ in


def kill_in_third_epoch_and_resume(cfg: TrainConfig, root: Path, monkeypatch) -> tuple[dict, dict, dict]:
    """Run ``cfg`` to the end in ``root/full``; run it again in ``root/part``, killed (KeyboardInterrupt) when
    its third epoch starts, then resumed. Returns ``(killed checkpoint, full checkpoint, resumed checkpoint)``
    after checking the two summaries' final accuracies are equal."""
    full = train_run(cfg, root / "full", progress=False)
    original = Trainer.run_epoch

    def crash_in_third_epoch(self, on_step=None, **kwargs):
        if self.epoch == 2:
            raise KeyboardInterrupt
        return original(self, on_step, **kwargs)

    monkeypatch.setattr(Trainer, "run_epoch", crash_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, root / "part", progress=False)
    monkeypatch.setattr(Trainer, "run_epoch", original)
    killed = torch.load(root / "part" / "checkpoint.pt", weights_only=True)  # tensors and plain data only
    resumed = train_run(TrainConfig(), root / "part", resume=True, progress=False)
    assert resumed["final_test_acc"] == full["final_test_acc"]
    return (killed, torch.load(root / "full" / "checkpoint.pt", weights_only=True),
            torch.load(root / "part" / "checkpoint.pt", weights_only=True))


def assert_same_checkpoint(a: dict, b: dict) -> None:
    """Every network (main, peer, meta), the method state and the history (bar timings) bit for bit."""
    for part in ("model", "peer", "meta"):
        assert (a.get(part) is None) == (b.get(part) is None), part
        for key in a.get(part) or {}:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    assert set(a["method_state"]) == set(b["method_state"])
    for key, value in a["method_state"].items():
        other = b["method_state"][key]
        assert torch.equal(value, other) if torch.is_tensor(value) else value == other, key
    strip = lambda h: [{k: v for k, v in r.items() if k not in TIMES} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
