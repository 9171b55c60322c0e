"""Methods: each is a step function over the shared training loop."""
from __future__ import annotations

from .barrier import barrier_lambda, barrier_step, reference_update
from .base import Batch, Method, StepContext
from .ce import ce_step
from .mlc import mlc_gradients, mlc_step

METHODS: dict[str, Method] = {
    "ce": Method("ce", ce_step, uses_meta=False, union_batches=True,
                 description="cross-entropy on silver and gold as one set (lower bound)"),
    "mlc": Method("mlc", mlc_step, uses_meta=True, description="Meta Label Correction, one-step look-ahead"),
    "mlcbome": Method("mlcbome", barrier_step, uses_meta=True,
                      description="MLC-D: dynamic barrier, K=5, rho=1, delta=0.5, xi=1"),
    "ebomlc": Method("ebomlc", barrier_step, uses_meta=True,
                     description="EBOMLC: dynamic barrier, K=1, rho=0.2, delta=0.25, xi=0.5"),
}

__all__ = ["METHODS", "Method", "Batch", "StepContext", "barrier_lambda", "barrier_step",
           "reference_update", "ce_step", "mlc_step", "mlc_gradients"]
