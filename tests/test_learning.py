"""End-to-end: the methods learn on the built-in digits data, and EBOMLC resists label noise."""
import pytest

from ebomlc import TrainConfig
from ebomlc.train import Trainer


def _final_acc(method: str, epochs: int, **kw) -> float:
    trainer = Trainer(TrainConfig(method=method, dataset="digits", gold_fraction=0.05, device="cpu", seed=2,
                                  epochs=epochs, **kw))
    for _ in range(epochs):
        row = trainer.run_epoch()
    return row["test_acc"]


def test_ebomlc_beats_ce_under_60_percent_uniform_noise():
    # Over 30 epochs CE memorises the noisy labels (~0.80 on seeds 1-3) while EBOMLC stays
    # at ~0.90-0.95: a margin of 0.10-0.14 on every seed tried.
    ce = _final_acc("ce", 30, corruption_level=0.6)
    ebomlc = _final_acc("ebomlc", 30, corruption_level=0.6)
    assert ebomlc > ce + 0.08, (ce, ebomlc)


@pytest.mark.parametrize("method", ["mlc", "mlcbome"])
def test_meta_methods_learn(method):
    assert _final_acc(method, 3, corruption_level=0.4, max_steps_per_epoch=8) > 0.3  # chance: 0.1
