"""Conv2d and BatchNorm2d with a cheap double backward, for hypergradients through ``grad_w g``.

MLC, L2RW and MW-Net differentiate ``grad_w g`` once more, in meta parameters that reach ``g``
only through the loss's output gradient. The forward and first backward here are PyTorch's own
kernels (bit-identical to ``nn.Conv2d`` / ``nn.BatchNorm2d``); what changes is the backward of
the backward, which computes only the terms the running backward will use:

- Convolution, ``y = conv(x, W)``: the cotangent of the output gradient is
  ``conv(gg_x, W) + conv(x, gg_W)`` (two forward convolutions). PyTorch's general formula also
  computes a weight-gradient convolution that a meta-parameter gradient throws away.
- BatchNorm, per channel with ``x_hat = (x - mean) * invstd``:
  ``grad_x = gamma * invstd * (grad_y - mean(grad_y) - x_hat * mean(grad_y * x_hat))``,
  ``grad_gamma = sum(grad_y * x_hat)``, ``grad_beta = sum(grad_y)``: linear in ``grad_y`` with a
  symmetric matrix, so the cotangent of ``grad_y`` is one more BatchNorm backward plus
  ``x_hat * gg_gamma + gg_beta``, instead of PyTorch's dozens of elementwise passes.

Terms in ``x`` and the weights (second order in ``w``, e.g. K > 1 look-aheads) are computed
exactly, and only when the engine will use them. Inside :func:`meta_gradient_only` the graph
of the backward keeps no output gradients at all (they serve only the terms in ``w``), which
saves about one activation-sized tensor per layer.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.graph import get_gradient_edge

_bn_backward = torch.ops.aten.native_batch_norm_backward.default
_conv_backward = torch.ops.aten.convolution_backward.default


_meta_only_depth = 0  # a plain global: CUDA runs backward on the engine's own threads


@contextmanager
def meta_gradient_only() -> Iterator[None]:
    """Graphs of ``grad_w`` built (``create_graph=True``) inside will be differentiated only in
    parameters that reach the loss through the output gradient (a meta model, per-example
    weights), never in ``w`` or the activations: their backward nodes keep no output gradients.
    Asking such a graph for a term in ``w`` later raises an error instead of a wrong number."""
    global _meta_only_depth
    _meta_only_depth += 1
    try:
        yield
    finally:
        _meta_only_depth -= 1


def _needs_output_gradient(grad_y: torch.Tensor | None) -> torch.Tensor:
    if grad_y is None:
        raise RuntimeError("a second derivative in the weights or activations was requested from a graph built "
                           "under meta_gradient_only(); build it outside that context")
    return grad_y


def _per_channel(x: torch.Tensor) -> tuple[list[int], tuple[int, ...]]:
    """``(dims reduced over, shape that broadcasts a per-channel vector)`` for ``x`` of N, C, ..."""
    return [0] + list(range(2, x.dim())), (1, -1) + (1,) * (x.dim() - 2)


def _normalised(x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor) -> torch.Tensor:
    shape = _per_channel(x)[1]
    return (x - mean.view(shape)) * invstd.view(shape)


def _backward_formula(grad_y: torch.Tensor, x: torch.Tensor, gamma: torch.Tensor, eps: float):
    """``(grad_x, grad_gamma, grad_beta)`` of training-mode BatchNorm in differentiable ops."""
    dims, shape = _per_channel(x)
    invstd = (x.var(dims, unbiased=False) + eps).rsqrt()
    x_hat = _normalised(x, x.mean(dims), invstd)
    grad_beta = grad_y.sum(dims)
    grad_gamma = (grad_y * x_hat).sum(dims)
    count = x.numel() // x.shape[1]
    grad_x = (gamma * invstd).view(shape) * (grad_y - (grad_beta / count).view(shape)
                                              - x_hat * (grad_gamma / count).view(shape))
    return grad_x, grad_gamma, grad_beta


def _conv_grads(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride, padding, mask) -> tuple:
    """``(grad_x, grad_W)`` of ``y = conv2d(x, W)`` (no bias, groups or dilation); ``mask`` says which."""
    grad_x, grad_w, _ = _conv_backward(grad_y, x, weight, None, stride, padding, [1, 1], False, [0, 0], 1,
                                       [mask[0], mask[1], False])
    return grad_x, grad_w


def _engine_needs(t: torch.Tensor | None) -> bool:
    """Whether the backward now running will use a gradient for ``t``."""
    if t is None or not t.requires_grad:
        return False
    try:
        return torch._C._will_engine_execute_node(get_gradient_edge(t).node)
    except RuntimeError:  # a leaf under autograd.grad(): the engine cannot say, so assume it is needed
        return True


class _Backward(torch.autograd.Function):
    """``(grad_x, grad_gamma, grad_beta)`` of BatchNorm as a differentiable function of ``grad_y``."""

    @staticmethod
    def forward(ctx, grad_y, x, gamma, mean, invstd, eps):
        grads = _bn_backward(grad_y, x, gamma, None, None, mean, invstd, True, eps, [True, True, True])
        ctx.save_for_backward(None if _meta_only_depth else grad_y, x, gamma, mean, invstd)
        ctx.eps = eps
        return grads

    @staticmethod
    def backward(ctx, gg_x, gg_gamma, gg_beta):
        grad_y, x, gamma, mean, invstd = ctx.saved_tensors
        out = [None] * 6
        dims, shape = _per_channel(x)
        if ctx.needs_input_grad[0]:  # M gg_x + x_hat gg_gamma + gg_beta (M symmetric)
            total = (_bn_backward(gg_x, x, gamma, None, None, mean, invstd, True, ctx.eps, [True, False, False])[0]
                     if gg_x is not None else torch.zeros_like(x))
            if gg_gamma is not None:
                total = total + _normalised(x, mean, invstd) * gg_gamma.view(shape)
            if gg_beta is not None:
                total = total + gg_beta.view(shape)
            out[0] = total
        if gg_x is not None and ctx.needs_input_grad[2] and _engine_needs(gamma):
            # grad_x is linear in gamma: d<gg_x, grad_x>/d gamma = sum(gg_x * grad_x at gamma = 1)
            unit = _bn_backward(_needs_output_gradient(grad_y), x, torch.ones_like(gamma), None, None, mean, invstd,
                                True, ctx.eps, [True, False, False])[0]
            out[2] = (gg_x * unit).sum(dims)
        if ctx.needs_input_grad[1] and _engine_needs(x):  # second derivative in x: the general formula
            with torch.enable_grad():
                leaf = x.detach().requires_grad_()
                grads = _backward_formula(_needs_output_gradient(grad_y).detach(), leaf, gamma.detach(), ctx.eps)
                pairs = [(g, c) for g, c in zip(grads, (gg_x, gg_gamma, gg_beta)) if c is not None and g.requires_grad]
                if pairs:
                    (out[1],) = torch.autograd.grad([g for g, _ in pairs], [leaf], [c for _, c in pairs],
                                                    allow_unused=True)
        return tuple(out)


class _TrainingBatchNorm(torch.autograd.Function):
    """Training-mode BatchNorm (batch statistics, running statistics updated in place)."""

    @staticmethod
    def forward(ctx, x, gamma, beta, running_mean, running_var, momentum, eps):
        y, mean, invstd = torch.native_batch_norm(x, gamma, beta, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(x, gamma, mean, invstd)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, gamma, mean, invstd = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: keep a backward that is cheap to differentiate
            grad_x, grad_gamma, grad_beta = _Backward.apply(grad_y, x, gamma, mean, invstd, ctx.eps)
        else:
            grad_x, grad_gamma, grad_beta = _bn_backward(grad_y, x, gamma, None, None, mean, invstd, True, ctx.eps,
                                                         list(ctx.needs_input_grad[:3]))
        return grad_x, grad_gamma, grad_beta, None, None, None, None


class _ConvBackward(torch.autograd.Function):
    """``(grad_x, grad_W)`` of ``y = conv(x, W)`` as a differentiable function of ``grad_y``."""

    @staticmethod
    def forward(ctx, grad_y, x, weight, stride, padding, mask):
        ctx.save_for_backward(None if _meta_only_depth else grad_y, x, weight)
        ctx.conv = (stride, padding)
        return _conv_grads(grad_y, x, weight, stride, padding, mask)

    @staticmethod
    def backward(ctx, gg_x, gg_w):
        grad_y, x, weight = ctx.saved_tensors
        stride, padding = ctx.conv
        out = [None] * 6
        if ctx.needs_input_grad[0]:  # d<gg_x, conv_T(grad_y, W)> + d<gg_W, wgrad(x, grad_y)> in grad_y
            terms = [F.conv2d(t, w, None, stride, padding) for t, w in ((gg_x, weight), (x, gg_w)) if t is not None
                     and w is not None]
            out[0] = sum(terms[1:], terms[0]) if terms else None
        if gg_w is not None and ctx.needs_input_grad[1] and _engine_needs(x):  # wgrad is linear in x
            out[1] = _conv_grads(_needs_output_gradient(grad_y), x, gg_w, stride, padding, (True, False))[0]
        if gg_x is not None and ctx.needs_input_grad[2] and _engine_needs(weight):  # conv_T is linear in W
            out[2] = _conv_grads(_needs_output_gradient(grad_y), gg_x, weight, stride, padding, (False, True))[1]
        return tuple(out)


class _Conv(torch.autograd.Function):
    """``conv2d(x, W)`` without bias, groups or dilation."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.conv = (stride, padding)
        return F.conv2d(x, weight, None, stride, padding)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.conv
        mask = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():  # create_graph: keep a backward that is cheap to differentiate
            grad_x, grad_w = _ConvBackward.apply(grad_y, x, weight, stride, padding, mask)
        else:
            grad_x, grad_w = _conv_grads(grad_y, x, weight, stride, padding, mask)
        return grad_x, grad_w, None, None


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` whose double backward computes only the terms that will be used."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        plain = (bias is None and self.groups == 1 and self.padding_mode == "zeros" and self.dilation == (1, 1)
                 and not isinstance(self.padding, str))
        return _Conv.apply(x, weight, self.stride, self.padding) if plain else super()._conv_forward(x, weight, bias)


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training-mode double backward in ``grad_y`` is one fused kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.affine and self.track_running_stats and self.momentum is not None):
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        return _TrainingBatchNorm.apply(x, self.weight, self.bias, self.running_mean, self.running_var,
                                        self.momentum, self.eps)
