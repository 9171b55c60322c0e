"""A two-component 1-d Gaussian mixture fitted by EM in torch (float64, deterministic: no random init).

Initialisation: responsibilities from the split at the mean of the data (values above it start in the
second component), then ``max_iter`` EM rounds stopping when the mean log-likelihood changes by less
than ``tol``; ``reg_covar`` is added to each variance (as scikit-learn's ``GaussianMixture``).
"""
from __future__ import annotations

import math

import torch


def _log_joint(x: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, variances: torch.Tensor) -> torch.Tensor:
    """``log pi_k + log N(x | mu_k, s_k^2)``, shape ``[n, 2]``."""
    return (weights.log() - 0.5 * (math.log(2 * math.pi) + variances.log())
            - 0.5 * (x[:, None] - means) ** 2 / variances)


def _m_step(x: torch.Tensor, resp: torch.Tensor, reg_covar: float):
    counts = resp.sum(0) + 10 * torch.finfo(x.dtype).eps
    means = (resp * x[:, None]).sum(0) / counts
    variances = (resp * (x[:, None] - means) ** 2).sum(0) / counts + reg_covar
    return counts / x.numel(), means, variances


def fit_two_gaussians(values: torch.Tensor, max_iter: int = 10, tol: float = 1e-2, reg_covar: float = 5e-4):
    """``(weights, means, variances)`` of the two-component mixture fitted to ``values`` (1-d)."""
    x = values.detach().double().flatten()
    resp = torch.stack([(x <= x.mean()).double(), (x > x.mean()).double()], 1)
    params = _m_step(x, resp, reg_covar)
    previous = -math.inf
    for _ in range(max_iter):
        log_joint = _log_joint(x, *params)
        log_norm = torch.logsumexp(log_joint, 1)
        params = _m_step(x, (log_joint - log_norm[:, None]).exp(), reg_covar)
        bound = float(log_norm.mean())
        if abs(bound - previous) < tol:
            break
        previous = bound
    return params


def low_mean_posterior(values: torch.Tensor, **fit_options) -> torch.Tensor:
    """``p(low-mean component | v_i)`` for each value: DivideMix's clean probability ``w_i`` of a loss."""
    weights, means, variances = fit_two_gaussians(values, **fit_options)
    x = values.detach().double().flatten()
    post = torch.softmax(_log_joint(x, weights, means, variances), 1)
    return post[:, int(means.argmin())].to(values.dtype)
