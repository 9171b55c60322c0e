"""Methods: each is a step function over the shared training loop."""
from __future__ import annotations

from .barrier import barrier_direction, barrier_lambda, barrier_step, sgd_step
from .base import Batch, Method, StepContext, label_corrector
from .ce import ce_step
from .coteachingplus import coteaching_plus_selection, coteachingplus_on_epoch_start, coteachingplus_step
from .dividemix import dividemix_on_epoch_start, dividemix_step
from .glc import estimate_corruption, glc_on_epoch_start, glc_step
from .l2rw import l2rw_step, l2rw_weights
from .mlc import mlc_gradients, mlc_step
from .mwnet import mwnet_gradients, mwnet_step, weight_net
from .pmwnet import pmwnet_gradients, pmwnet_on_epoch_start, pmwnet_step, variational_weight_net

METHODS: dict[str, Method] = {
    "ce": Method("ce", ce_step, union_batches=True,
                 description="cross-entropy on silver and gold as one set (lower bound)"),
    "gold": Method("gold", ce_step, gold_only=True,
                   description="cross-entropy on the gold set alone (the floor every meta method must beat)"),
    "mlc": Method("mlc", mlc_step, build_meta=label_corrector, corrects_labels=True,
                  description="Meta Label Correction, one-step look-ahead"),
    "mlcbome": Method("mlcbome", barrier_step, build_meta=label_corrector, corrects_labels=True,
                      description="MLC-D: dynamic barrier, K=5, rho=1, delta=0.5, xi=1"),
    "ebomlc": Method("ebomlc", barrier_step, build_meta=label_corrector, corrects_labels=True,
                     description="EBOMLC: dynamic barrier, K=1, rho=0.2, delta=0.25, xi=0.5"),
    "glc": Method("glc", glc_step, on_epoch_start=glc_on_epoch_start,
                  description="Gold Loss Correction: estimate C on gold, retrain forward-corrected"),
    "l2rw": Method("l2rw", l2rw_step, description="Learning to Reweight: per-example weights from a look-ahead"),
    "mwnet": Method("mwnet", mwnet_step, build_meta=weight_net,
                    description="Meta-Weight-Net: an MLP maps each loss to a weight"),
    "pmwnet": Method("pmwnet", pmwnet_step, build_meta=variational_weight_net, on_epoch_start=pmwnet_on_epoch_start,
                     description="PMW-Net: MW-Net with a Gaussian posterior over the weight net, KL to a prior"),
    # sample selection: gold images join the training set as ordinary samples (as for ``ce``)
    "coteachingplus": Method("coteachingplus", coteachingplus_step, union_batches=True, two_networks=True,
                             on_epoch_start=coteachingplus_on_epoch_start,
                             description="Co-teaching+: two networks exchange small-loss disagreement samples"),
    "dividemix": Method("dividemix", dividemix_step, union_batches=True, two_networks=True, ensemble=True,
                        on_epoch_start=dividemix_on_epoch_start,
                        description="DivideMix: GMM co-divide, MixMatch with co-refinement and co-guessing"),
}

__all__ = ["METHODS", "label_corrector", "estimate_corruption", "glc_on_epoch_start", "glc_step", "l2rw_step",
           "l2rw_weights", "mwnet_gradients", "mwnet_step", "weight_net", "Method", "Batch", "StepContext", "barrier_lambda", "barrier_step",
           "barrier_direction", "sgd_step", "ce_step", "mlc_step", "mlc_gradients",
           "coteaching_plus_selection", "coteachingplus_step", "dividemix_step", "pmwnet_gradients", "pmwnet_step"]
