"""Evaluation: test accuracy/loss and the meta model's label correction on the silver set."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import NoisyData
from ..data.augment import normalize


class MeanLogits(nn.Module):
    """``(f_1(x) + f_2(x)) / 2`` with the first network's features: two networks evaluated as one."""

    def __init__(self, first: nn.Module, second: nn.Module):
        super().__init__()
        self.first, self.second = first, second

    def forward(self, x: torch.Tensor):
        logits, feature = self.first(x)
        return (logits + self.second(x)[0]) / 2, feature


#: ``on_eval(what, done, total)``: progress of an evaluation pass ("test", "val" or "silver") in images.
OnEval = Callable[[str, int, int], None] | None


@torch.no_grad()
def _features(model: nn.Module, x_uint8: torch.Tensor, data: NoisyData, chunk: int = 1000,
              on_eval: OnEval = None, what: str = "test"):
    n = x_uint8.shape[0]
    for i in range(0, n, chunk):
        yield i, model(normalize(x_uint8[i:i + chunk], data.mean, data.std))
        if on_eval is not None:
            on_eval(what, min(i + chunk, n), n)


def _eval_mode(*modules: nn.Module | None):
    states = [(m, m.training) for m in modules if m is not None]
    for m, _ in states:
        m.eval()
    return states


def _restore(states) -> None:
    for m, mode in states:
        m.train(mode)


@torch.no_grad()
def evaluate_set(model: nn.Module, x: torch.Tensor, y: torch.Tensor, data: NoisyData, what: str,
                 on_eval: OnEval = None) -> dict[str, float]:
    """``<what>_acc`` and ``<what>_loss``: accuracy and mean CE of the main model (eval mode) on ``x, y``."""
    states = _eval_mode(model)
    correct, loss = torch.zeros((), device=y.device), torch.zeros((), device=y.device)
    for i, (logits, _) in _features(model, x, data, on_eval=on_eval, what=what):
        labels = y[i:i + logits.shape[0]]
        correct += (logits.argmax(1) == labels).sum()
        loss += F.cross_entropy(logits.float(), labels, reduction="sum")
    _restore(states)
    n = y.numel()
    return {f"{what}_acc": float(correct) / n, f"{what}_loss": float(loss) / n}


def evaluate_test(model: nn.Module, data: NoisyData, on_eval: OnEval = None) -> dict[str, float]:
    """Accuracy and mean CE of the main model (eval mode) on the clean test set."""
    return evaluate_set(model, data.x_test, data.y_test, data, "test", on_eval)


def evaluate_val(model: nn.Module, data: NoisyData, on_eval: OnEval = None) -> dict[str, float]:
    """``val_acc`` and ``val_loss`` on the validation set (``data.val_source`` says where it comes from)."""
    return evaluate_set(model, data.x_val, data.y_val, data, "val", on_eval)


@torch.no_grad()
def corrected_labels(model: nn.Module, meta: nn.Module, data: NoisyData, on_eval: OnEval = None) -> torch.Tensor:
    """The meta model's corrected-label distribution ``m_a(h_w(x), y~)`` on every silver image
    (features from the main model in eval mode on un-augmented images)."""
    states = _eval_mode(model, meta)
    probs = []
    for i, (_, feature) in _features(model, data.x_silver, data, on_eval=on_eval, what="silver"):
        probs.append(meta(feature, data.silver_noisy[i:i + feature.shape[0]]).exp())
    _restore(states)
    return torch.cat(probs)


@torch.no_grad()
def label_correction(model: nn.Module, meta: nn.Module, data: NoisyData,
                     on_eval: OnEval = None) -> tuple[dict[str, float], torch.Tensor | None]:
    """Accuracy of ``argmax m_a`` against the true silver labels: overall, on originally clean
    and on originally corrupted samples; and the ``K x K`` count matrix [true, corrected].
    Without true silver labels (``data.silver_true`` None): no metrics and no matrix."""
    if data.silver_true is None:
        return {}, None
    pred = corrected_labels(model, meta, data, on_eval).argmax(1)
    true, noisy = data.silver_true, data.silver_noisy
    hit = (pred == true).float()
    clean = noisy == true
    k = data.num_classes
    matrix = torch.bincount(true * k + pred, minlength=k * k).reshape(k, k)

    def mean(mask: torch.Tensor) -> float:
        return float(hit[mask].mean()) if bool(mask.any()) else float("nan")

    return ({"lc_acc": float(hit.mean()), "lc_acc_clean": mean(clean), "lc_acc_corrupted": mean(~clean)},
            matrix.cpu())
