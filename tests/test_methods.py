"""Every equation of SPEC.md's methods against an independent computation."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ebomlc.departures import variant_parts
from ebomlc.methods import METHODS, barrier_direction, barrier_lambda, mlc_gradients
from ebomlc.methods.losses import lower_loss, mixture_upper_loss, reference_upper_loss, soft_ce

from .tiny import clone_ctx, make_batch, make_ctx, plain_twin


# ------------------------------------------------------------------ naive, independent losses
def naive_lower(model, meta, wdict, adict, batch, mix=True):
    half = batch.x_gold.shape[0] // 2
    xs, ys = batch.x_silver, batch.y_silver
    xc, yc = (batch.x_gold[half:], batch.y_gold[half:]) if mix else (batch.x_gold[:0], batch.y_gold[:0])
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    logits, feat = functional_call(model, {**wdict, **buffers}, (torch.cat([xs, xc]),))
    p = functional_call(meta, adict, (feat[:len(ys)].detach(), ys)).exp()
    silver = -(p * F.log_softmax(logits[:len(ys)], 1)).sum(1)  # per sample soft CE
    clean = F.cross_entropy(logits[len(ys):], yc, reduction="none")
    return (silver.sum() + clean.sum()) / (len(ys) + len(yc))


def naive_upper(model, meta, wdict, adict, batch, rho):
    half = batch.x_gold.shape[0] // 2
    x, y = batch.x_gold[:half], batch.y_gold[:half]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    logits, feat = functional_call(model, {**wdict, **buffers}, (x,))
    p_main = logits.softmax(1)
    p_meta = functional_call(meta, adict, (feat.detach(), y)).exp()
    mixture = rho * p_main + (1 - rho) * p_meta
    return -torch.log(mixture[torch.arange(len(y)), y]).mean()


def params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


# ------------------------------------------------------------------ losses
def test_mixture_upper_loss_matches_naive_and_edge_cases():
    torch.manual_seed(0)
    logits, y = torch.randn(7, 4, dtype=torch.float64), torch.randint(0, 4, (7,))
    meta_lp = torch.log_softmax(torch.randn(7, 4, dtype=torch.float64), 1)
    for rho in (0.0, 0.2, 0.7, 1.0):
        mix = rho * logits.softmax(1) + (1 - rho) * meta_lp.exp()
        expected = -torch.log(mix[torch.arange(7), y]).mean()
        torch.testing.assert_close(mixture_upper_loss(logits, meta_lp, y, rho), expected)
    torch.testing.assert_close(mixture_upper_loss(logits, None, y, 1.0), F.cross_entropy(logits, y))
    torch.testing.assert_close(reference_upper_loss(logits, meta_lp, y, 0.2),
                               F.cross_entropy(0.2 * logits + 0.8 * meta_lp.exp(), y))


def test_lower_loss_weights_silver_and_clean_by_size():
    torch.manual_seed(1)
    ls, lc = torch.randn(10, 3), torch.randn(4, 3)
    p = torch.log_softmax(torch.randn(10, 3), 1)
    yc = torch.randint(0, 3, (4,))
    expected = (10 * soft_ce(ls, p) + 4 * F.cross_entropy(lc, yc)) / 14
    torch.testing.assert_close(lower_loss(ls, p, lc, yc), expected)
    torch.testing.assert_close(lower_loss(ls, p), soft_ce(ls, p))


# ------------------------------------------------------------------ MLC hypergradient
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_mlc_meta_gradient_matches_finite_differences(arch):
    K = 1
    ctx = make_ctx("mlc", arch=arch, inner_steps=K)
    batch = make_batch(arch=arch)
    _, meta_grads, _, _ = mlc_gradients(ctx, batch)
    model, meta, eta = ctx.model, ctx.meta, ctx.lr
    w = params(model)
    a = params(meta)
    torch.manual_seed(5)
    v = {k: torch.randn_like(t) for k, t in a.items()}

    def upper_at(a_values):
        w_look = dict(w)
        for _ in range(K):
            wdict = {k: t.clone().requires_grad_(True) for k, t in w_look.items()}
            g = naive_lower(model, meta, wdict, a_values, batch)
            grads = torch.autograd.grad(g, list(wdict.values()))
            w_look = {k: t.detach() - eta * gr for (k, t), gr in zip(wdict.items(), grads)}
        return naive_upper(model, meta, w_look, a_values, batch, rho=1.0)

    eps = 1e-6
    plus = upper_at({k: a[k] + eps * v[k] for k in a})
    minus = upper_at({k: a[k] - eps * v[k] for k in a})
    numeric = (plus - minus) / (2 * eps)
    analytic = sum((gr * v[k]).sum() for k, gr in zip(a, meta_grads))
    assert abs(float(analytic)) > 1e-6  # the test has something to detect
    torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_mlc_two_step_lookahead_matches_unrolled_autograd(arch):
    # With K > 1 the meta input h_{w_1} depends on a through w_1; the feature is detached by
    # definition (SPEC.md), so finite differences of the function do not apply. Compare with the
    # fully unrolled look-ahead written out independently instead, through PyTorch's own layers
    # (second order in w: the double backward's terms in x and the weights).
    ctx = make_ctx("mlc", arch=arch, inner_steps=2)
    batch = make_batch(arch=arch)
    model = plain_twin(ctx.model)
    _, meta_grads, _, _ = mlc_gradients(ctx, batch)
    meta, eta = ctx.meta, ctx.lr
    a = {k: t.clone().requires_grad_(True) for k, t in params(meta).items()}
    w_look = {k: t.clone().requires_grad_(True) for k, t in params(model).items()}
    for step in range(2):
        g = naive_lower(model, meta, w_look, a, batch)
        grads = torch.autograd.grad(g, list(w_look.values()), create_graph=True)
        w_look = {k: (t.detach() if step == 0 else t) - eta * gr for (k, t), gr in zip(w_look.items(), grads)}
    expected = torch.autograd.grad(naive_upper(model, meta, w_look, a, batch, rho=1.0), list(a.values()))
    assert max(float(e.abs().max()) for e in expected) > 1e-4
    for e, got in zip(expected, meta_grads):
        torch.testing.assert_close(got, e, rtol=1e-9, atol=1e-12)


def test_mlc_step_updates_main_with_lower_gradient_taken_before_meta_update():
    ctx = make_ctx("mlc")
    batch = make_batch()
    w0, model = params(ctx.model), ctx.model
    wdict = {k: t.clone().requires_grad_(True) for k, t in w0.items()}
    g = naive_lower(model, ctx.meta, wdict, params(ctx.meta), batch)
    grads = dict(zip(wdict, torch.autograd.grad(g, list(wdict.values()))))
    METHODS["mlc"].step(ctx, batch)
    for k, p in model.named_parameters():
        d = grads[k] + ctx.config.weight_decay * w0[k]  # first SGD step: momentum buffer = d
        torch.testing.assert_close(p.detach(), w0[k] - ctx.lr * d)


# ------------------------------------------------------------------ the barrier QP
def _qp_by_projected_gradient(grad_F, grad_q, phi, iters=4000):
    """Brute force: projected gradient descent on ||d - grad F||^2 over the half-space."""
    d = torch.randn_like(grad_F)
    for _ in range(iters):
        d = d - 0.5 * (d - grad_F)
        gap = phi - grad_q.dot(d)
        if gap > 0:
            d = d + gap / grad_q.dot(grad_q) * grad_q
    return d


@pytest.mark.parametrize("case", ["random", "clipped", "aligned_meta"])
def test_barrier_lambda_solves_the_qp(case):
    torch.manual_seed({"random": 0, "clipped": 1, "aligned_meta": 2}[case])
    nw, na, delta = 12, 5, 0.25
    gw_F, ga_F = torch.randn(nw, dtype=torch.float64), torch.randn(na, dtype=torch.float64)
    gw_q, ga_q = torch.randn(nw, dtype=torch.float64), torch.randn(na, dtype=torch.float64)
    if case == "clipped":
        gw_q, ga_q = 0.1 * gw_F, 0.01 * ga_q  # grad F already well aligned with grad q: no push needed
    if case == "aligned_meta":
        ga_q = 3.0 * ga_F
    lam = barrier_lambda(gw_F, ga_F, gw_q, ga_q, delta, eps=0.0)
    grad_F, grad_q = torch.cat([gw_F, ga_F]), torch.cat([gw_q, ga_q])
    phi = delta * grad_q.dot(grad_q) + ga_F.dot(ga_q)
    d_star = grad_F + lam * grad_q
    d_brute = _qp_by_projected_gradient(grad_F, grad_q, phi)
    torch.testing.assert_close(d_star, d_brute, rtol=1e-6, atol=1e-8)
    if case == "clipped":
        assert lam == 0
    else:
        assert lam > 0
        torch.testing.assert_close(grad_q.dot(d_star), phi)  # the constraint is active


# ------------------------------------------------------------------ the barrier step
def naive_barrier_step(ctx, batch, K, rho, delta, xi, fd=True, restore=False):
    """SPEC.md steps 1-4, written out independently; returns expected (w, a) after the step. The SGD step
    starts from ``w_K`` (EBOMLC) or, ``restore``, from the restored ``w`` (MLC-D)."""
    model, meta, eta, wd = ctx.model, ctx.meta, ctx.lr, ctx.config.weight_decay
    w, a = params(model), params(meta)

    def grads_at(wv, av, wrt_w=True):
        wd_ = {k: t.clone().requires_grad_(wrt_w) for k, t in wv.items()}
        ad_ = {k: t.clone().requires_grad_(True) for k, t in av.items()}
        g = naive_lower(model, meta, wd_, ad_, batch)
        inputs = (list(wd_.values()) if wrt_w else []) + list(ad_.values())
        gr = torch.autograd.grad(g, inputs)
        n = len(wd_) if wrt_w else 0
        return g, dict(zip(wd_, gr[:n])), dict(zip(ad_, gr[n:]))

    g0, gw_g, ga_g = grads_at(w, a)
    wK = dict(w)
    for _ in range(K):
        _, gwk, _ = grads_at(wK, a)
        wK = {k: wK[k] - eta * gwk[k] for k in wK}
    gK, gw_gK, ga_gK = grads_at(wK, a, wrt_w=fd)
    gw_q = {k: gw_g[k] - gw_gK[k] if fd else gw_g[k] for k in w}
    ga_q = {k: ga_g[k] - ga_gK[k] for k in a}
    wd_ = {k: t.clone().requires_grad_(True) for k, t in w.items()}
    ad_ = {k: t.clone().requires_grad_(True) for k, t in a.items()}
    upper = naive_upper(model, meta, wd_, ad_, batch, rho)
    gr = torch.autograd.grad(upper, list(wd_.values()) + list(ad_.values()), allow_unused=True)
    gw_F = {k: g if g is not None else torch.zeros_like(w[k]) for k, g in zip(w, gr[:len(w)])}
    ga_F = {k: g if g is not None else torch.zeros_like(a[k]) for k, g in zip(a, gr[len(w):])}
    dot = lambda x, y: sum((x[k] * y[k]).sum() for k in x)  # noqa: E731
    q2 = dot(gw_q, gw_q) + dot(ga_q, ga_q)
    phi = delta * q2 + dot(ga_F, ga_q)
    lam = max(float(phi - dot(gw_F, gw_q) - dot(ga_F, ga_q)), 0.0) / (float(q2) + ctx.config.eps)
    d_w = {k: gw_F[k] + xi * lam * gw_q[k] for k in w}
    d_a = {k: ga_F[k] + xi * lam * ga_q[k] for k in a}
    start = w if restore else wK
    w_new = {k: start[k] - eta * (d_w[k] + wd * start[k]) for k in w}  # first SGD step (buffer = grad)
    lr_a = ctx.config.meta_lr
    a_new = {k: a[k] - lr_a * d_a[k] / (d_a[k].abs() + 1e-8) for k in a}  # first Adam step
    return w_new, a_new, lam, float((g0 - gK).detach())


@pytest.mark.parametrize("method,K,fd", [("ebomlc", 1, True), ("ebomlc", 3, True), ("ebomlc", 2, False),
                                         ("mlcbome", 5, True)])
def test_barrier_step_matches_naive_spec(method, K, fd):
    ctx = make_ctx(method, inner_steps=K, grad_q_w="fd" if fd else "partial")
    cfg = ctx.config
    batch = make_batch()
    w_new, a_new, lam, gap = naive_barrier_step(ctx, batch, K, cfg.rho, cfg.delta, cfg.xi, fd,
                                                restore=method == "mlcbome")
    out = METHODS[method].step(ctx, batch)
    assert lam > 0  # the barrier is active, so xi and delta matter in this comparison
    torch.testing.assert_close(float(out["lambda"]), lam, rtol=1e-6, atol=1e-10)
    torch.testing.assert_close(float(out["value_gap"]), gap, rtol=1e-6, atol=1e-12)
    for k, p in ctx.model.named_parameters():
        torch.testing.assert_close(p.detach(), w_new[k], rtol=1e-7, atol=1e-10)
    for k, p in ctx.meta.named_parameters():  # Adam's first step is ~sign(d_a): loose where d_a ~ 0
        torch.testing.assert_close(p.detach(), a_new[k], rtol=1e-6, atol=1e-8)


def test_ebomlc_with_mlcbome_settings_equals_mlcbome():
    ebo = make_ctx("ebomlc", rho=1.0, inner_steps=5, xi=1.0, delta=0.5, departures="restore_w")
    bome = clone_ctx(ebo, method="mlcbome")
    assert bome.config.rho == 1.0 and bome.config.inner_steps == 5
    for seed in range(3):
        batch = make_batch(seed)
        out_e = METHODS["ebomlc"].step(ebo, batch)
        out_b = METHODS["mlcbome"].step(bome, batch)
        assert float(out_e["lambda"]) == float(out_b["lambda"])
    for (k, p), q in zip(ebo.model.named_parameters(), bome.model.parameters()):
        assert torch.equal(p, q), k
    for p, q in zip(ebo.meta.parameters(), bome.meta.parameters()):
        assert torch.equal(p, q)


def test_rho_one_makes_the_alignment_term_vanish():
    ctx = make_ctx("ebomlc", rho=1.0)
    out = METHODS["ebomlc"].step(ctx, make_batch())
    assert float(out["grad_a_F_norm"]) == 0.0
    # with the alignment term present (rho < 1) it does not vanish
    out = METHODS["ebomlc"].step(make_ctx("ebomlc", rho=0.2), make_batch())
    assert float(out["grad_a_F_norm"]) > 0.0


@pytest.mark.parametrize("method", ["ebomlc", "mlcbome", "mlc"])
def test_inner_loop_never_touches_live_parameters_or_running_stats(method):
    # with restore_w the live weights at the SGD step are w itself; EBOMLC's default moves them to w_1 on
    # purpose, after the inner loop (SPEC.md step 4, test_departures.py)
    ctx = make_ctx(method, **({"departures": "restore_w"} if method == "ebomlc" else {}))
    batch = make_batch()
    w0 = params(ctx.model)
    # running statistics as updated by the live forwards at w only
    shadow = copy.deepcopy(ctx.model)
    half = batch.x_gold.shape[0] // 2
    shadow(torch.cat([batch.x_silver, batch.x_gold[half:]]))
    if method != "mlc":
        shadow(batch.x_gold[:half])
    seen = {}
    real_step = ctx.opt.step

    def checked_step(*args, **kwargs):
        seen["params"] = params(ctx.model)
        seen["buffers"] = {k: b.clone() for k, b in ctx.model.named_buffers()}
        return real_step(*args, **kwargs)

    ctx.opt.step = checked_step
    METHODS[method].step(ctx, batch)
    for k in w0:
        assert torch.equal(seen["params"][k], w0[k]), k
    for k, b in shadow.named_buffers():
        torch.testing.assert_close(seen["buffers"][k], b)


# ------------------------------------------------------------------ reference variant
def transcribe_reference(gw_F, ga_F, gw_q, ga_q, w, w_look, buf, eta, mu, wd, delta, xi, other_dataset):
    """SPEC.md "Reference variant", transcribed per parameter tensor."""
    delta_F = [-eta * (mu * b + g + wd * p) for b, g, p in zip(buf, gw_F, w)]
    norm2 = sum((t ** 2).sum() for t in gw_q) + sum((t ** 2).sum() for t in ga_q)
    inner = sum((q * dF).sum() for q, dF in zip(gw_q, delta_F))
    lam = xi * max(float(delta * norm2 - inner), 0.0) / float(norm2)
    if other_dataset:
        gw_q = [-eta * (mu * b + q + wd * p) for b, q, p in zip(buf, gw_q, w_look)]
    main = [lam * q + dF for q, dF in zip(gw_q, delta_F)]
    meta = [f + lam * q for f, q in zip(ga_F, ga_q)]
    return main, meta, lam


@pytest.mark.parametrize("other_dataset", [False, True])
def test_reference_update_matches_transcription(other_dataset):
    torch.manual_seed(3)
    shapes_w, shapes_a = [(3, 4), (4,), (2, 2)], [(5,), (1, 5)]
    r = lambda shapes: [torch.randn(s, dtype=torch.float64) for s in shapes]  # noqa: E731
    gw_F, gw_q, w, w_look, buf = r(shapes_w), r(shapes_w), r(shapes_w), r(shapes_w), r(shapes_w)
    ga_F, ga_q = r(shapes_a), r(shapes_a)
    gw_q = [0.05 * t for t in gw_q]
    hp = dict(eta=0.1, mu=0.9, wd=5e-4, delta=0.25, xi=0.5)
    main_t, meta_t, lam_t = transcribe_reference(gw_F, ga_F, gw_q, ga_q, w, w_look, buf,
                                                 other_dataset=other_dataset, **hp)
    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])  # noqa: E731
    parts = variant_parts("reference", "digits" if other_dataset else "cifar10")
    assert ("q_as_step" in parts) == other_dataset
    main, meta, lam = barrier_direction(flat(gw_F), flat(ga_F), flat(gw_q), flat(ga_q), parts, w=flat(w),
                                        w_look=flat(w_look), momentum_buf=flat(buf), eps=1e-8, **hp)
    assert lam_t > 0
    torch.testing.assert_close(float(lam), lam_t)
    torch.testing.assert_close(main, flat(main_t))
    torch.testing.assert_close(meta, flat(meta_t))


def test_reference_variant_steps_from_lookahead_weights():
    ctx = make_ctx("ebomlc", variant="reference")
    assert any(isinstance(m, torch.nn.Dropout) for m in ctx.meta.net)
    batch = make_batch()
    w0 = params(ctx.model)
    seen = {}
    real_step = ctx.opt.step

    def checked_step(*args, **kwargs):
        seen["params"] = params(ctx.model)
        return real_step(*args, **kwargs)

    ctx.opt.step = checked_step
    out = METHODS["ebomlc"].step(ctx, batch)
    assert torch.isfinite(out["lambda"])
    moved = any(not torch.equal(seen["params"][k], w0[k]) for k in w0)
    assert moved  # the live weights were set to w' before the optimizer step
