"""The losses of SPEC.md, as pure functions of logits and meta log-probabilities."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def soft_ce(logits: torch.Tensor, target_log_probs: torch.Tensor) -> torch.Tensor:
    """``mean_i softCE = mean_i -sum_k p_ik log_softmax(logits_i)_k`` with ``p = exp(target_log_probs)``."""
    return -(target_log_probs.exp() * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def lower_loss(logits_silver: torch.Tensor, meta_log_probs: torch.Tensor,
               logits_clean: torch.Tensor | None = None, y_clean: torch.Tensor | None = None) -> torch.Tensor:
    """``g = [|B_s| softCE(f(x_s), m(h, y~_s)) + |B_c| CE(f(x_c), y_c)] / (|B_s| + |B_c|)``
    (the second term only in mix mode, on the second gold half)."""
    silver = soft_ce(logits_silver, meta_log_probs)
    if logits_clean is None or logits_clean.shape[0] == 0:
        return silver
    n_s, n_c = logits_silver.shape[0], logits_clean.shape[0]
    return (n_s * silver + n_c * F.cross_entropy(logits_clean, y_clean)) / (n_s + n_c)


def mixture_upper_loss(logits_gold: torch.Tensor, meta_log_probs: torch.Tensor | None,
                       y_gold: torch.Tensor, rho: float) -> torch.Tensor:
    """``F = mean -log(rho softmax(f(x_g)) + (1 - rho) m(h_g, y_g))[y_g]``, in log space.

    ``rho = 1`` is plain cross-entropy (the MLC upper loss; ``meta_log_probs`` may be None) and
    ``rho = 0`` the meta model's negative log-likelihood, both exact.
    """
    if rho >= 1.0:
        return F.cross_entropy(logits_gold, y_gold)
    log_meta = meta_log_probs.gather(1, y_gold[:, None]).squeeze(1)
    if rho <= 0.0:
        return -log_meta.mean()
    log_main = F.log_softmax(logits_gold, dim=1).gather(1, y_gold[:, None]).squeeze(1)
    return -torch.logaddexp(math.log(rho) + log_main, math.log1p(-rho) + log_meta).mean()


def reference_upper_loss(logits_gold: torch.Tensor, meta_log_probs: torch.Tensor | None,
                         y_gold: torch.Tensor, rho: float) -> torch.Tensor:
    """The public EBOMLC code's upper loss: ``CE(rho * logits + (1 - rho) * m(h_g, y_g), y_g)``,
    main logits mixed with meta probabilities inside ``cross_entropy``."""
    if rho >= 1.0:
        return F.cross_entropy(logits_gold, y_gold)
    return F.cross_entropy(rho * logits_gold + (1.0 - rho) * meta_log_probs.exp(), y_gold)
