"""Each departure of the authors' code from the paper, and the restored-``w`` reading of step 4, is its
own part of the barrier step.

The variants step bit for bit as the step did before the parts existed (``legacy_barrier.py``):
``restore_w`` (and MLC-D's ``paper``) as its paper reading, ``reference`` as its reference, and the
revised ``paper`` of EBOMLC as its paper reading plus the former part ``lookahead_step``; each part
alone changes the step, in the way its definition says (tiny model, computed by hand).
"""
import functools
import copy

import pytest
import torch
import torch.nn.functional as F

from ebomlc import TrainConfig
from ebomlc.departures import PARTS, parse_departures, resolve_parts, variant_parts
from ebomlc.errors import ConfigError
from ebomlc.methods import METHODS, barrier_direction, barrier_lambda, sgd_step
from ebomlc.methods.losses import lower_loss

from .legacy_barrier import legacy_barrier_step
from .tiny import clone_ctx, make_batch, make_ctx


def state(ctx):
    """Everything a step may change: main and meta parameters, running statistics, optimizer state."""
    tensors = [t.detach().clone() for t in (*ctx.model.parameters(), *ctx.model.buffers(), *ctx.meta.parameters())]
    for opt in (ctx.opt, ctx.meta_opt):
        for s in opt.state.values():
            tensors += [v.clone() for v in s.values() if torch.is_tensor(v)]
    return tensors


def run(step, ctx, steps=3):
    outs = []
    for i in range(steps):
        torch.manual_seed(100 + i)  # dropout masks of the reference meta model
        outs.append(step(ctx, make_batch(seed=i + 1)))
    return outs


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# ------------------------------------------------------------------ bit for bit with the step before parts
#: (method, variant) -> how the step before the parts ran it: (reference, keep_inner_step)
LEGACY_EQUIVALENT = {
    ("ebomlc", "paper"): (False, True),  # the revised SPEC: the former paper + lookahead_step
    ("ebomlc", "restore_w"): (False, False),  # the former paper reading
    ("ebomlc", "reference"): (True, False),
    ("mlcbome", "paper"): (False, False),  # MLC-D still restores w
    ("mlcbome", "restore_w"): (False, False),
    ("mlcbome", "reference"): (True, False),
}


@pytest.mark.parametrize("variant", ["paper", "restore_w", "reference"])
@pytest.mark.parametrize("dataset", ["digits", "cifar10"])
@pytest.mark.parametrize("method,K,grad_q_w", [("ebomlc", 1, "fd"), ("ebomlc", 2, "partial"), ("mlcbome", 5, "fd")])
def test_variants_equal_the_step_before_parts_bit_for_bit(variant, dataset, method, K, grad_q_w):
    new = make_ctx(method, variant=variant, dataset=dataset, inner_steps=K, grad_q_w=grad_q_w)
    old = clone_ctx(new)
    reference, keep = LEGACY_EQUIVALENT[method, variant]
    outs_new = run(METHODS[method].step, new)
    outs_old = run(functools.partial(legacy_barrier_step, reference=reference, keep_inner_step=keep), old)
    assert same(state(new), state(old))
    for a, b in zip(outs_new, outs_old):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ each part alone changes the step
@pytest.mark.parametrize("part", list(PARTS))
@pytest.mark.parametrize("base", ["paper", "reference"])
def test_each_part_alone_changes_the_step(part, base):
    departures = (f"-{part}",) if part in variant_parts(base, "digits") else (part,)
    ctx = make_ctx("ebomlc", variant=base)
    toggled = make_ctx("ebomlc", variant=base, departures=departures)
    assert ctx.config.parts ^ toggled.config.parts == {part}
    run(METHODS["ebomlc"].step, ctx, steps=2)
    run(METHODS["ebomlc"].step, toggled, steps=2)
    assert not same(state(ctx), state(toggled))


# ------------------------------------------------------------------ each part does what it says
def _vectors(seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda n: torch.randn(n, generator=g, dtype=torch.float64)  # noqa: E731
    grad_w_F = r(4)  # grad_w q partly against grad_w F, so the paper's barrier is active
    return dict(grad_w_F=grad_w_F, grad_a_F=r(3), grad_w_q=0.1 * r(4) - 0.05 * grad_w_F, grad_a_q=0.1 * r(3)), \
        dict(w=r(4), w_look=r(4), momentum_buf=r(4), eta=0.1, mu=0.9, wd=5e-4, delta=0.25, xi=0.5, eps=1e-8)


def test_paper_direction_is_grad_F_plus_xi_lambda_grad_q():
    v, hp = _vectors()
    d_w, d_a, lam = barrier_direction(**v, parts=frozenset(), **hp)
    q2 = v["grad_w_q"].dot(v["grad_w_q"]) + v["grad_a_q"].dot(v["grad_a_q"])
    lam_hand = max(float(hp["delta"] * q2 - v["grad_w_F"].dot(v["grad_w_q"])), 0) / (float(q2) + hp["eps"])
    assert lam_hand > 0
    torch.testing.assert_close(float(lam), lam_hand)
    torch.testing.assert_close(d_w, v["grad_w_F"] + hp["xi"] * lam_hand * v["grad_w_q"])
    torch.testing.assert_close(d_a, v["grad_a_F"] + hp["xi"] * lam_hand * v["grad_a_q"])


def test_step_lambda_measures_alignment_against_the_sgd_step():
    v, hp = _vectors()
    v["grad_w_q"] = v["grad_w_q"] + 0.1 * v["grad_w_F"]  # against Delta_F (a negated gradient): active barrier
    delta_F = -hp["eta"] * (hp["mu"] * hp["momentum_buf"] + v["grad_w_F"] + hp["wd"] * hp["w"])
    q2 = float(v["grad_w_q"].dot(v["grad_w_q"]) + v["grad_a_q"].dot(v["grad_a_q"]))
    lam_hand = hp["xi"] * max(hp["delta"] * q2 - float(v["grad_w_q"].dot(delta_F)), 0) / q2
    assert lam_hand > 0
    d_w, d_a, lam = barrier_direction(**v, parts=frozenset({"step_lambda"}), **hp)
    torch.testing.assert_close(float(lam), lam_hand)
    torch.testing.assert_close(d_w, v["grad_w_F"] + lam_hand * v["grad_w_q"])  # xi is inside lambda
    torch.testing.assert_close(d_a, v["grad_a_F"] + lam_hand * v["grad_a_q"])
    # grad_w q pointing along Delta_F lowers lambda (the paper's lambda uses grad_w F, of opposite sign)
    aligned = dict(v, grad_w_q=0.01 * delta_F)
    assert float(barrier_direction(**aligned, parts=frozenset({"step_lambda"}), **hp)[2]) < hp["xi"] * hp["delta"]


def test_step_f_term_puts_the_negated_sgd_step_in_the_main_direction():
    v, hp = _vectors()
    d_w, _, lam = barrier_direction(**v, parts=frozenset({"step_f_term"}), **hp)
    delta_F = -hp["eta"] * (hp["mu"] * hp["momentum_buf"] + v["grad_w_F"] + hp["wd"] * hp["w"])
    torch.testing.assert_close(d_w, delta_F + hp["xi"] * lam * v["grad_w_q"])
    # with grad q = 0 the F term points uphill: SGD on d_w increases a loss whose gradient is grad_w F
    zero_q = dict(v, grad_w_q=torch.zeros(4, dtype=torch.float64), grad_a_q=torch.ones(3, dtype=torch.float64))
    hp0 = dict(hp, momentum_buf=torch.zeros(4, dtype=torch.float64), wd=0.0)
    d_w0, _, _ = barrier_direction(**zero_q, parts=frozenset({"step_f_term"}), **hp0)
    assert float(d_w0.dot(v["grad_w_F"])) < 0


def test_q_as_step_replaces_grad_w_q_after_lambda():
    v, hp = _vectors()
    d_w, d_a, lam = barrier_direction(**v, parts=frozenset({"q_as_step"}), **hp)
    assert float(lam) == float(barrier_lambda(v["grad_w_F"], v["grad_a_F"], v["grad_w_q"], v["grad_a_q"],
                                              hp["delta"], hp["eps"]))
    q_w = -hp["eta"] * (hp["mu"] * hp["momentum_buf"] + v["grad_w_q"] + hp["wd"] * hp["w_look"])
    torch.testing.assert_close(d_w, v["grad_w_F"] + hp["xi"] * lam * q_w)
    torch.testing.assert_close(d_a, v["grad_a_F"] + hp["xi"] * lam * v["grad_a_q"])
    torch.testing.assert_close(sgd_step(v["grad_w_q"], hp["w_look"], hp["momentum_buf"], hp["eta"], hp["mu"],
                                        hp["wd"]), q_w)


def _weights_at_optimizer_step(ctx, batch):
    seen = {}
    real_step = ctx.opt.step

    def checked_step(*args, **kwargs):
        seen["w"] = [p.detach().clone() for p in ctx.model.parameters()]
        return real_step(*args, **kwargs)

    ctx.opt.step = checked_step
    METHODS[ctx.config.method].step(ctx, batch)
    ctx.opt.step = real_step
    return seen["w"]


def _grad_g(ctx, batch):
    """``grad_w g(w, a)`` of a copy (running statistics untouched)."""
    model, meta = copy.deepcopy(ctx.model), copy.deepcopy(ctx.meta)
    x_up, y_up, x_c, y_c = batch.gold_halves(True)
    logits, feature = model(torch.cat([batch.x_silver, x_c]))
    n = len(batch.y_silver)
    g = lower_loss(logits[:n], meta(feature[:n].detach(), batch.y_silver), logits[n:], y_c)
    return torch.autograd.grad(g, list(model.parameters()))


@pytest.mark.parametrize("momentum", [False, True])
@pytest.mark.parametrize("variant", ["paper", "restore_w"])
def test_main_step_starts_from_w_K_unless_restore_w_and_inner_momentum_makes_it_an_sgd_step(variant, momentum):
    """SPEC.md step 4: EBOMLC's SGD step starts from ``w_1 = w - eta grad_w g`` (with ``inner_momentum``
    the authors' SGD step); ``restore_w`` starts it from ``w`` itself."""
    parts = ("inner_momentum",) if momentum else ()
    ctx = make_ctx("ebomlc", variant=variant, departures=parts)
    run(METHODS["ebomlc"].step, ctx, steps=1)  # fills the momentum buffer
    batch = make_batch(seed=7)
    w = [p.detach().clone() for p in ctx.model.parameters()]
    bufs = [ctx.opt.state[p]["momentum_buffer"].clone() for p in ctx.model.parameters()]
    grads = _grad_g(ctx, batch)
    eta, mu, wd = ctx.lr, ctx.config.momentum, ctx.config.weight_decay
    if variant == "restore_w":
        expected = w
    elif momentum:
        expected = [p - eta * (mu * b + g + wd * p) for p, g, b in zip(w, grads, bufs)]
    else:
        expected = [p - eta * g for p, g in zip(w, grads)]
    for got, want in zip(_weights_at_optimizer_step(ctx, batch), expected):
        torch.testing.assert_close(got, want)


def test_mlcbome_restores_w_and_its_paper_is_restore_w():
    """MLC-D's preset (SPEC.md table: the main step from the restored ``w``, as BOME)."""
    c = TrainConfig(method="mlcbome", dataset="digits").resolved()
    assert c.variant == "paper" and c.parts == {"restore_w"} and c.departures == ""
    ctx = make_ctx("mlcbome", inner_steps=2)
    run(METHODS["mlcbome"].step, ctx, steps=1)
    w = [p.detach().clone() for p in ctx.model.parameters()]
    for got, want in zip(_weights_at_optimizer_step(ctx, make_batch(seed=7)), w):
        assert torch.equal(got, want)
    # removing the part makes MLC-D step from w_K as EBOMLC does
    c = TrainConfig(method="mlcbome", dataset="digits", departures="-restore_w").resolved()
    assert c.parts == frozenset() and c.departures == "-restore_w"


def test_logit_mix_upper_is_cross_entropy_of_mixed_logits_and_probabilities():
    ctx = make_ctx("ebomlc", departures=("logit_mix_upper",))
    batch = make_batch()
    model, meta = copy.deepcopy(ctx.model), copy.deepcopy(ctx.meta)
    model(torch.cat([batch.x_silver, batch.gold_halves(True)[2]]))  # the step's first live forward (BN stats)
    x_up, y_up, _, _ = batch.gold_halves(True)
    logits, feature = model(x_up)
    rho = ctx.config.rho
    expected = F.cross_entropy(rho * logits + (1 - rho) * meta(feature, y_up).exp(), y_up)
    out = METHODS["ebomlc"].step(ctx, batch)
    torch.testing.assert_close(out["upper_loss"], expected.detach())


def test_lookahead_bn_updates_running_statistics_at_w_K():
    ctx = make_ctx("ebomlc", departures=("lookahead_bn",))
    batch = make_batch()
    shadow = copy.deepcopy(ctx.model)
    x_up, _, x_c, _ = batch.gold_halves(True)
    x_low = torch.cat([batch.x_silver, x_c])
    grads = _grad_g(ctx, batch)
    shadow(x_low)
    shadow(x_up)
    with torch.no_grad():  # the forward at w_K = w - eta grad g updates the live statistics too
        for p, g in zip(shadow.parameters(), grads):
            p -= ctx.lr * g
    shadow(x_low)
    METHODS["ebomlc"].step(ctx, batch)
    for b, s in zip(ctx.model.buffers(), shadow.buffers()):
        torch.testing.assert_close(b, s)


def test_reference_meta_builds_the_authors_meta_model():
    paper, ref = make_ctx("ebomlc"), make_ctx("ebomlc", departures=("reference_meta",))
    kinds = lambda ctx: [type(m).__name__ for m in ctx.meta.net]  # noqa: E731
    assert "Dropout" not in kinds(paper) and "BatchNorm1d" not in kinds(paper)
    assert kinds(ref) == ["Linear", "Tanh", "Dropout", "Linear", "Tanh", "BatchNorm1d", "Linear"]
    # PyTorch's default embedding init is N(0, 1); xavier-uniform on a 3x4 table is bounded by sqrt(6/7)
    bound = (6 / sum(paper.meta.embedding.weight.shape)) ** 0.5
    assert paper.meta.embedding.weight.abs().max() <= bound
    torch.manual_seed(0)
    big = [make_ctx("ebomlc", seed=s, departures=("reference_meta",)).meta.embedding.weight.abs().max()
           for s in range(5)]
    assert max(big) > bound


# ------------------------------------------------------------------ resolution and recording
def test_departures_resolve_relative_to_the_variant_and_record_their_shortest_form():
    c = TrainConfig(method="ebomlc", dataset="digits", variant="reference",
                    departures=("+restore_w", "-q_as_step")).resolved()
    assert c.parts == (variant_parts("reference", "digits") | {"restore_w"}) - {"q_as_step"}
    assert c.departures == "restore_w,-q_as_step"
    assert c.to_dict()["departures"] == "restore_w,-q_as_step"
    again = TrainConfig.from_dict(c.to_dict()).resolved()
    assert again.parts == c.parts and again.departures == c.departures
    # on CIFAR-10 the reference variant leaves grad_w q as it is, as the authors' code does
    assert "q_as_step" not in TrainConfig(method="ebomlc", dataset="cifar10", variant="reference").resolved().parts
    assert "restore_w" not in variant_parts("reference", "digits")  # the authors' code never restores w
    paper = TrainConfig(method="ebomlc", dataset="digits", departures="restore_w,step_f_term").resolved()
    assert paper.parts == {"restore_w", "step_f_term"}
    assert TrainConfig(method="ebomlc", variant="paper").resolved().parts == frozenset()


def test_unknown_and_retired_parts_are_one_clear_error():
    with pytest.raises(ConfigError, match="unknown part 'restore'.*restore_w"):
        TrainConfig(method="ebomlc", departures=("restore",)).resolved()
    with pytest.raises(ConfigError, match="'lookahead_step' is retired.*default of variant paper.*restore_w"):
        TrainConfig(method="ebomlc", departures="lookahead_step").resolved()
    assert parse_departures(None) is None
    assert resolve_parts("paper", ["+step_lambda"], "digits") == {"step_lambda"}


def test_ebomlc_preset_is_inner_step_and_the_named_variants_are_their_parts():
    preset = TrainConfig(method="ebomlc", dataset="digits").resolved()
    assert preset.variant == "inner_step" and preset.parts == {"step_f_term"}  # docs/variants.md: the evidence
    assert TrainConfig(method="ebomlc", variant="paper").resolved().parts == frozenset()  # SPEC.md itself
    restore = TrainConfig(method="ebomlc", variant="restore_w").resolved()
    assert restore.parts == {"restore_w"} and restore.departures == ""
    inner = TrainConfig(method="ebomlc", variant="inner_step").resolved()
    assert inner.parts == {"step_f_term"} and inner.departures == ""
    assert TrainConfig(method="ebomlc", variant="inner_step", departures="-step_f_term").resolved().parts == set()
    # each named variant steps exactly as the paper reading with its parts added
    for variant, spelled_as in (("inner_step", "step_f_term"), ("restore_w", "restore_w")):
        named = make_ctx("ebomlc", variant=variant)
        spelled = make_ctx("ebomlc", departures=spelled_as)
        run(METHODS["ebomlc"].step, named)
        run(METHODS["ebomlc"].step, spelled)
        assert same(state(named), state(spelled))


def test_the_ebomlc_preset_steps_as_the_revised_paper_plus_step_f_term():
    """The default (no variant named) is ``inner_step``: bit for bit the revised paper step with
    ``step_f_term``, i.e. the former paper reading + ``lookahead_step`` + ``step_f_term``."""
    preset = make_ctx("ebomlc", variant=None)
    spelled = make_ctx("ebomlc", variant="paper", departures="step_f_term")
    assert preset.config.variant == "inner_step"
    run(METHODS["ebomlc"].step, preset)
    run(METHODS["ebomlc"].step, spelled)
    assert same(state(preset), state(spelled))
