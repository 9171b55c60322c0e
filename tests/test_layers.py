"""Conv2d / BatchNorm2d with the cheap double backward equal PyTorch's layers: bit for bit in the
forward and first backward, to rounding in every second-order term, and the hypergradient path
runs only the kernels it needs."""
import contextlib
from collections import Counter

import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from ebomlc.methods.functional import call_live
from ebomlc.models import meta_gradient_only

from .tiny import TinyConv, plain_twin


def _pair(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    ours = TinyConv().to(dtype)
    with torch.no_grad():
        for m in ours.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return ours, plain_twin(ours)


def test_forward_first_backward_and_running_stats_are_bit_identical():
    ours, plain = _pair(torch.float32)
    x = torch.randn(16, 2, 6, 6)
    for train in (True, False):
        ours.train(train), plain.train(train)
        outs = [m(x) for m in (ours, plain)]
        assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
        grads = [torch.autograd.grad(o[0].square().sum(), list(m.parameters())) for o, m in zip(outs, (ours, plain))]
        assert all(torch.equal(a, b) for a, b in zip(*grads))
    for (name, a), (_, b) in zip(ours.named_buffers(), plain.named_buffers()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("wrt", ["meta", "weights", "input", "all"])
def test_second_derivatives_match_pytorch_layers(wrt):
    ours, plain = _pair()
    x0 = torch.randn(6, 2, 6, 6, dtype=torch.float64)
    a = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)  # reaches g only through grad_y
    results = []
    for model in (ours, plain):
        w = list(model.parameters())
        x = x0.clone().requires_grad_(True)
        logits, _ = model(x)
        g = (logits * a).sum() + 0.1 * logits.square().sum()
        first = torch.autograd.grad(g, w + [x], create_graph=True)
        gen = torch.Generator().manual_seed(1)
        s = sum((f * torch.randn(f.shape, generator=gen, dtype=f.dtype)).sum() for f in first)
        targets = {"meta": [a], "weights": w, "input": [x], "all": [a, x] + w}[wrt]
        results.append(torch.autograd.grad(s, targets))
    assert max(float(t.abs().max()) for t in results[1]) > 1e-3
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[func.__name__.split(".")[0]] += 1
        return func(*args, **(kwargs or {}))


def test_meta_gradient_runs_only_the_forward_convolutions_and_one_batchnorm_backward_per_layer():
    ours, _ = _pair()
    x = torch.randn(6, 2, 6, 6, dtype=torch.float64)
    a = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    (logits, _), _, w = call_live(ours, x)  # non-leaf views: the engine can say what it needs
    first = torch.autograd.grad((logits * a).sum() + logits.square().sum(), w, create_graph=True)
    s = sum((f * torch.ones_like(f)).sum() for f in first)
    with _Ops() as ops:
        torch.autograd.grad(s, [a])
    # conv1 (input needs no grad): conv(x, gg_W); conv2: conv(gg_x, W) + conv(h, gg_W)
    assert ops.calls["convolution"] == 3
    assert ops.calls["convolution_backward"] == 0  # no weight- or input-gradient convolutions
    assert ops.calls["native_batch_norm_backward"] == 2  # the symmetric map, once per BatchNorm
    assert ops.calls["var"] == 0 and ops.calls["var_mean"] == 0  # never the general formula


def test_graph_built_for_meta_gradients_only_keeps_no_output_gradients_and_refuses_terms_in_w():
    ours, _ = _pair()
    x = torch.randn(6, 2, 6, 6, dtype=torch.float64)
    a = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    results = []
    for meta_only in (False, True):
        (logits, _), _, w = call_live(ours, x)
        with meta_gradient_only() if meta_only else contextlib.nullcontext():
            first = torch.autograd.grad((logits * a).sum() + logits.square().sum(), w, create_graph=True)
        s = sum(f.square().sum() for f in first)
        saved = [t for node in _nodes(s.grad_fn) for t in _saved(node)]
        results.append((torch.autograd.grad(s, [a], retain_graph=True)[0], len(saved)))
        if meta_only:
            with pytest.raises(RuntimeError, match="meta_gradient_only"):
                torch.autograd.grad(s, w)
    (full, n_full), (lean, n_lean) = results
    torch.testing.assert_close(lean, full, rtol=0, atol=0)
    assert n_lean == n_full - 4  # one output gradient fewer per conv and per BatchNorm


def _nodes(root):
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(n for n, _ in node.next_functions)


def _saved(node):
    return [t for t in getattr(node, "saved_tensors", ()) if t is not None]
