"""GLC, L2RW and MW-Net against brute-force and finite-difference computations."""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ebomlc import TrainConfig
from ebomlc.data.noise import corruption_matrix
from ebomlc.methods import estimate_corruption, l2rw_weights, mwnet_gradients
from ebomlc.methods.mwnet import WeightNet
from ebomlc.train import Trainer

from .tiny import make_batch, make_ctx


def test_glc_estimate_recovers_a_known_corruption_matrix():
    k = 6
    c = torch.tensor(corruption_matrix("flip", 0.35, k, seed=4), dtype=torch.float64)
    y_gold = torch.arange(k).repeat_interleave(7)
    # the model is exact: it outputs p(noisy label | x) = C[true class of x]; x is the class index
    estimate = estimate_corruption(lambda x: c[x], y_gold.clone(), y_gold, k)
    torch.testing.assert_close(estimate, c)


def test_glc_switches_phase_with_a_fresh_model():
    cfg = TrainConfig(method="glc", dataset="digits", gold_fraction=0.05, epochs=4, glc_phase1_epochs=2,
                      max_steps_per_epoch=2, device="cpu")
    t = Trainer(cfg)
    t.run_epoch()
    t.run_epoch()
    assert "c_hat" not in t.ctx.state
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.run_epoch()
    c_hat = t.ctx.state["c_hat"]
    assert c_hat.shape == (10, 10)
    torch.testing.assert_close(c_hat.sum(1), torch.ones(10))
    assert t.history[-1]["lr"] == cfg.main_lr  # fresh schedule for phase 2
    assert any(not torch.equal(before[k], v) for k, v in t.model.state_dict().items())


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_l2rw_weights_equal_brute_force(arch):
    ctx, batch = make_ctx("l2rw", arch=arch), make_batch(seed=1 if arch == "mlp" else 2, n=6, arch=arch)
    model = ctx.model
    names, w = zip(*model.named_parameters())
    u, _ = l2rw_weights(ctx, batch)
    # brute force: per-example gradients <grad l_i(w), grad F(w)> (at e = 0, w' = w)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    losses = F.cross_entropy(functional_call(model, {**dict(zip(names, w)), **buffers}, (batch.x_silver,))[0],
                             batch.y_silver, reduction="none")
    gold = F.cross_entropy(functional_call(model, {**dict(zip(names, w)), **buffers}, (batch.x_gold,))[0],
                           batch.y_gold)
    grad_F = torch.autograd.grad(gold, w)
    dots = []
    for i in range(len(losses)):
        grad_i = torch.autograd.grad(losses[i], w, retain_graph=True)
        dots.append(sum((a * b).sum() for a, b in zip(grad_i, grad_F)))
    raw = torch.stack(dots).clamp_min(0)
    assert 0 < int((raw > 0).sum()) < len(raw)  # some weights clipped, some not
    torch.testing.assert_close(u, raw / raw.sum())


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_mwnet_meta_gradient_matches_finite_differences(arch):
    ctx = make_ctx("mwnet", arch=arch)
    torch.manual_seed(0)
    ctx.meta = WeightNet().double()
    batch = make_batch(n=6, arch=arch)
    meta_grads, _, _ = mwnet_gradients(ctx, batch)
    model, vnet, eta = ctx.model, ctx.meta, ctx.lr
    names, w = zip(*model.named_parameters())
    w = [p.detach() for p in w]
    theta = {k: v.detach().clone() for k, v in vnet.named_parameters()}
    v_dir = {k: torch.randn_like(t) for k, t in theta.items()}

    def upper_at(th):
        wr = [p.clone().requires_grad_(True) for p in w]
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        losses = F.cross_entropy(functional_call(model, {**dict(zip(names, wr)), **buffers}, (batch.x_silver,))[0],
                                 batch.y_silver, reduction="none")
        weights = functional_call(vnet, th, (losses.detach(),))
        grads = torch.autograd.grad((weights * losses).mean(), wr)
        w_look = [p.detach() - eta * g for p, g in zip(wr, grads)]
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        logits = functional_call(model, {**dict(zip(names, w_look)), **buffers}, (batch.x_gold,))[0]
        return F.cross_entropy(logits, batch.y_gold)

    eps = 1e-6
    numeric = (upper_at({k: theta[k] + eps * v_dir[k] for k in theta})
               - upper_at({k: theta[k] - eps * v_dir[k] for k in theta})) / (2 * eps)
    analytic = sum((g * v_dir[k]).sum() for k, g in zip(theta, meta_grads))
    assert abs(float(analytic)) > 1e-7
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("method,epochs,steps", [("glc", 8, None), ("l2rw", 4, 8), ("mwnet", 4, 8)])
def test_baselines_learn_on_noisy_digits(method, epochs, steps):
    t = Trainer(TrainConfig(method=method, dataset="digits", gold_fraction=0.05, corruption_level=0.4,
                            epochs=epochs, max_steps_per_epoch=steps, device="cpu", seed=1))
    for _ in range(epochs):
        row = t.run_epoch()
    assert row["test_acc"] > 0.5  # chance: 0.1


# ------------------------------------------------------------------ gold: CE on the gold set alone
class _CountedReads(torch.Tensor):
    """A tensor that counts how often it is indexed, by name (every read of images is an indexing)."""

    reads: dict = {}

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(args[0], "_name", None) if args else None
        if func is torch.Tensor.__getitem__ and name is not None:
            cls.reads[name] = cls.reads.get(name, 0) + 1
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


def _counted(t: torch.Tensor, name: str) -> torch.Tensor:
    out = t.as_subclass(_CountedReads)
    out._name = name
    return out


def test_gold_never_reads_a_silver_image_and_takes_a_silver_epoch_of_steps():
    cfg = TrainConfig(method="gold", dataset="digits", gold_fraction=0.2, epochs=2, device="cpu", threads=1)
    watched = Trainer(cfg)
    watched.data.x_silver = watched.x_train = _counted(watched.data.x_silver, "silver")
    real_gold = watched.data.x_gold
    watched.data.x_gold = _counted(real_gold, "gold")
    _CountedReads.reads = {}
    for _ in range(2):
        watched.run_epoch(evaluate=False)
    steps = len(watched.data.silver_noisy) // cfg.bs
    assert watched.steps_per_epoch == steps > len(real_gold) // cfg.bs  # a silver epoch of steps, from gold
    assert _CountedReads.reads == {"gold": 2 * steps}  # one gold read per step; silver never indexed
    # the same run with every silver image replaced by white trains to identical weights
    plain = Trainer(cfg)
    plain.data.x_silver = plain.x_train = torch.full_like(plain.data.x_silver, 255)
    for _ in range(2):
        plain.run_epoch(evaluate=False)
    for p, q in zip(plain.model.state_dict().values(), watched.model.state_dict().values()):
        assert torch.equal(p, q.as_subclass(torch.Tensor))
    # and it learns from the gold images alone
    assert plain.run_epoch()["test_acc"] > 0.5
