"""Co-teaching+, DivideMix and PMW-Net: their equations on hand-built numbers, and their runs in the
shared loop (learning on digits, exact resume, a study trial)."""
import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ebomlc import TrainConfig
from ebomlc.methods import METHODS, StepContext, coteaching_plus_selection
from ebomlc.methods.coteachingplus import coteachingplus_step, forget_rate_at
from ebomlc.methods.dividemix import co_refine, lambda_u, mixup_lambda, sharpen, uniform_prior_penalty
from ebomlc.methods.gmm import fit_two_gaussians, low_mean_posterior
from ebomlc.methods.mwnet import WeightNet, mwnet_step
from ebomlc.methods.pmwnet import VariationalWeightNet, gaussian_kl, pmwnet_step
from ebomlc.train import Trainer

from tune.spec import load_spec

from .resume import assert_same_checkpoint, kill_in_third_epoch_and_resume
from .tiny import FAST, K, Tiny, make_batch

STUDIES = Path(__file__).resolve().parents[1] / "tune" / "studies"


# ------------------------------------------------------------------ Co-teaching+
def _logits_for(preds, losses_at_label, labels):
    """Logits ``5`` at the predicted class and ``-l`` at the label: where the two differ, the CE at the label
    increases with ``l``."""
    logits = torch.zeros(len(preds), K, dtype=torch.float64)
    for i, (p, l, y) in enumerate(zip(preds, losses_at_label, labels)):
        logits[i, y] = -l
        logits[i, p] = 5.0
    return logits


def test_coteaching_plus_selects_the_peers_small_loss_disagreements():
    labels = torch.tensor([0, 0, 2, 0, 1, 2, 1, 1])
    pred_1 = [0, 1, 0, 1, 1, 0, 2, 2]
    pred_2 = [0, 2, 0, 2, 1, 1, 0, 0]  # disagree on 1, 3, 5, 6, 7, each labelled the third class
    loss_1 = [0.1, 0.9, 0.2, 0.3, 0.1, 0.8, 0.4, 0.5]  # order on D: 3 (0.3) < 6 < 7 < 5 < 1
    loss_2 = [0.5, 0.2, 0.1, 0.7, 0.3, 0.6, 0.1, 0.4]  # order on D: 6 (0.1) < 1 < 7 < 5 < 3
    logits_1, logits_2 = _logits_for(pred_1, loss_1, labels), _logits_for(pred_2, loss_2, labels)
    for_1, for_2 = coteaching_plus_selection(logits_1, logits_2, labels, forget_rate=0.4, disagreement=True)
    # floor(0.6 * 5) = 3 kept: network 1 trains on network 2's three smallest, and vice versa
    assert for_1.tolist() == [6, 1, 7] and for_2.tolist() == [3, 6, 7]
    for_1, for_2 = coteaching_plus_selection(logits_1, logits_2, labels, forget_rate=0.4, disagreement=False)
    assert for_1.numel() == 4  # before init_epochs: floor(0.6 * 8) of the whole batch
    ce_1 = F.cross_entropy(logits_1, labels, reduction="none")
    assert set(for_2.tolist()) == set(ce_1.argsort()[:4].tolist())
    assert [t.numel() for t in coteaching_plus_selection(logits_1, logits_1, labels, 0.4, True)] == [0, 0]


def test_forget_rate_ramps_linearly_to_the_final_rate():
    assert [forget_rate_at(e, 0.6, 4) for e in range(6)] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.6, 0.6])
    assert forget_rate_at(0, 0.6, 1) == 0.0 and forget_rate_at(1, 0.6, 1) == 0.6


@pytest.mark.parametrize("norm", ["batch", "selected"])
def test_coteaching_plus_step_updates_each_network_on_its_selection(norm):
    torch.manual_seed(0)
    model, peer = Tiny().double(), Tiny().double()
    cfg = TrainConfig(method="coteachingplus", dataset="digits", forget_rate=0.5, coteach_init_epochs=0,
                      coteach_gradual_epochs=1, epochs=10, coteach_norm=norm).resolved()
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, peer)]
    ctx = StepContext(model, None, opts[0], None, cfg, peer=peer, peer_opt=opts[1], epoch=3)
    batch = make_batch(n=16)
    twin, twin_peer = copy.deepcopy(model), copy.deepcopy(peer)
    logits_1, logits_2 = twin(batch.x_silver)[0], twin_peer(batch.x_silver)[0]
    for_1, for_2 = coteaching_plus_selection(logits_1.detach(), logits_2.detach(), batch.y_silver, 0.5, True)
    assert 0 < for_1.numel() < 16
    # batch: each selected sample weighs 1/16, as under CE on the whole batch; selected: 1/|S|
    n_1, n_2 = (16, 16) if norm == "batch" else (for_1.numel(), for_2.numel())
    y = batch.y_silver
    grads_1 = torch.autograd.grad(F.cross_entropy(logits_1[for_1], y[for_1], reduction="sum") / n_1,
                                  list(twin.parameters()))
    grads_2 = torch.autograd.grad(F.cross_entropy(logits_2[for_2], y[for_2], reduction="sum") / n_2,
                                  list(twin_peer.parameters()))
    before = [[p.detach().clone() for p in m.parameters()] for m in (model, peer)]
    out = coteachingplus_step(ctx, batch)
    assert float(out["updated_fraction"]) == for_1.numel() / 16
    for params, old, grads in ((model.parameters(), before[0], grads_1), (peer.parameters(), before[1], grads_2)):
        for p, o, g in zip(params, old, grads):
            torch.testing.assert_close(p.detach(), o - 0.1 * g)


# ------------------------------------------------------------------ DivideMix
def test_gmm_splits_a_bimodal_loss_vector():
    g = torch.Generator().manual_seed(0)
    clean = 0.1 + 0.03 * torch.randn(300, generator=g, dtype=torch.float64)
    noisy = 0.8 + 0.05 * torch.randn(100, generator=g, dtype=torch.float64)
    values = torch.cat([clean, noisy])
    weights, means, variances = fit_two_gaussians(values)
    low = int(means.argmin())
    assert float(means[low]) == pytest.approx(0.1, abs=0.01) and float(means[1 - low]) == pytest.approx(0.8, abs=0.02)
    assert float(weights[low]) == pytest.approx(0.75, abs=0.01)
    w = low_mean_posterior(values)
    assert bool((w[:300] > 0.99).all()) and bool((w[300:] < 0.01).all())
    from sklearn.mixture import GaussianMixture  # the authors' implementation of the same fit

    gmm = GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4, random_state=0)
    gmm.fit(values.numpy().reshape(-1, 1))
    reference = gmm.predict_proba(values.numpy().reshape(-1, 1))[:, gmm.means_.argmin()]
    torch.testing.assert_close(w, torch.from_numpy(reference), atol=1e-3, rtol=0)
    assert torch.equal(low_mean_posterior(values), w)  # deterministic


def test_co_refinement_and_sharpening_by_hand():
    refined = co_refine(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0.6]), torch.tensor([[0.2, 0.5, 0.3]]))
    torch.testing.assert_close(refined, torch.tensor([[0.68, 0.20, 0.12]]))  # 0.6 y + 0.4 p
    sharp = sharpen(torch.tensor([[0.5, 0.3, 0.2]]), 0.5)  # squares 0.25, 0.09, 0.04 over 0.38
    torch.testing.assert_close(sharp, torch.tensor([[0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38]]))
    torch.testing.assert_close(sharpen(torch.tensor([[0.5, 0.3, 0.2]]), 1.0), torch.tensor([[0.5, 0.3, 0.2]]))


def test_mixup_lambda_is_the_larger_of_l_and_one_minus_l():
    assert mixup_lambda(0.3) == 0.7 and mixup_lambda(0.8) == 0.8 and mixup_lambda(0.5) == 0.5


def test_uniform_prior_penalty_and_lambda_u_table():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]]))
    mean = torch.tensor([0.4, 0.2, 0.4])
    torch.testing.assert_close(uniform_prior_penalty(logits), (torch.full((3,), 1 / 3) * torch.log(1 / 3 / mean)).sum())
    assert float(uniform_prior_penalty(torch.zeros(4, 3))) == pytest.approx(0.0, abs=1e-7)
    cfg = TrainConfig(method="dividemix", dataset="cifar10").resolved()
    assert [lambda_u(cfg, r) for r in (0.2, 0.5, 0.8, 0.9)] == [0.0, 25.0, 25.0, 50.0]
    assert lambda_u(TrainConfig(method="dividemix", dataset="cifar100").resolved(), 0.5) == 150.0


# ------------------------------------------------------------------ PMW-Net
def test_pmwnet_kl_equals_its_closed_form():
    torch.manual_seed(0)
    mu = [torch.randn(3, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    log_sigma = [torch.randn(3, 2, dtype=torch.float64) * 0.5, torch.randn(4, dtype=torch.float64) * 0.5]
    expected = sum(torch.distributions.kl_divergence(torch.distributions.Normal(m, s.exp()),
                                                     torch.distributions.Normal(0.0, 0.7)).sum()
                   for m, s in zip(mu, log_sigma))
    torch.testing.assert_close(gaussian_kl(mu, log_sigma, 0.7), expected)
    m, s = torch.tensor([0.3], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64)  # by hand, s0 = 1
    torch.testing.assert_close(gaussian_kl([m], [s], 1.0), torch.tensor(0.5 * 0.09, dtype=torch.float64))


def test_pmwnet_sampling_is_seeded_and_changes_the_weights():
    net = VariationalWeightNet(sigma_init=0.1).double()
    losses = torch.linspace(0.1, 3.0, 7, dtype=torch.float64)
    torch.manual_seed(3)
    first = net.weights(losses, net.sample())
    torch.manual_seed(3)
    again = net.weights(losses, net.sample())
    other = net.weights(losses, net.sample())
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.allclose(first, net(losses))  # a sample is not the posterior mean


def _weight_ctx(method, meta, seed=0):
    torch.manual_seed(seed)
    model = Tiny().double()
    cfg = TrainConfig(method=method, dataset="digits", main_lr=0.3, meta_lr=1e-2, pmwnet_kl_weight=0.0).resolved()
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return StepContext(model, meta, opt, torch.optim.Adam(meta.parameters(), lr=cfg.meta_lr, amsgrad=True), cfg)


def test_pmwnet_with_zero_variance_is_the_mwnet_step():
    torch.manual_seed(1)
    vnet = WeightNet().double()
    qnet = VariationalWeightNet(sigma_init=1.0).double()
    qnet.mean.load_state_dict(vnet.state_dict())
    with torch.no_grad():
        for s in qnet.log_sigma:
            s.fill_(-float("inf"))  # sigma = 0: every sample is the mean
    mw, pmw = _weight_ctx("mwnet", vnet), _weight_ctx("pmwnet", qnet)
    for step in range(2):
        batch = make_batch(seed=step + 1, n=12)
        a, b = mwnet_step(mw, batch), pmwnet_step(pmw, batch)
        torch.testing.assert_close(a["upper_loss"], b["upper_loss"], rtol=0, atol=0)
    for p, q in zip(mw.model.parameters(), pmw.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    for p, q in zip(vnet.parameters(), qnet.mean.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert not any(torch.equal(p, q) for p, q in zip(WeightNet().double().parameters(), vnet.parameters()))


# ------------------------------------------------------------------ in the shared loop
LEARN = dict(FAST, corruption_level=0.6, seed=1, threads=1)


def _final_acc(method, epochs, **options):
    trainer = Trainer(TrainConfig(method=method, epochs=epochs, eval_every=epochs, **{**LEARN, **options}))
    for _ in range(epochs):
        row = trainer.run_epoch()
    return row["test_acc"]


@pytest.fixture(scope="module")
def ce_at_60():
    """CE's final accuracy on digits at uniform 60% noise over the quickstart's 20 epochs (it memorises the noise
    after its peak; measured 0.875)."""
    return _final_acc("ce", 20)


#: The quickstart's schedules of Co-teaching+ and DivideMix on 20 digits epochs (the published epochs scaled to
#: 20 starve classes: docs/methods.md); the other methods ignore them
QUICKSTART_SCHEDULES = {k: v for k, v in load_spec(STUDIES / "quickstart.yaml").options.items()
                        if k.startswith(("coteach_", "dividemix_"))}


@pytest.mark.parametrize("method", ["coteachingplus", "dividemix", "pmwnet"])
def test_learns_above_ce_at_60_percent_uniform_noise(method, ce_at_60):
    acc = _final_acc(method, 20, **QUICKSTART_SCHEDULES)  # measured: 0.944, 0.950, 0.931
    assert acc > ce_at_60 and acc > 0.5  # chance: 0.1


def test_coteaching_plus_mean_over_the_selection_collapses_under_sgd(ce_at_60):
    # the mean over a 2-5% disagreement set is a 20-50x step per sample: measured 0.853 -> 0.092 on entering
    # the disagreement phase, 0.767 at the end; the batch-normalised loss ends at 0.944
    assert _final_acc("coteachingplus", 20, coteach_norm="selected", **QUICKSTART_SCHEDULES) < ce_at_60


@pytest.mark.parametrize("method", ["coteachingplus", "dividemix", "pmwnet"])
def test_resumed_run_equals_uninterrupted(tmp_path, monkeypatch, method):
    cfg = TrainConfig(method=method, epochs=4, corruption_level=0.4, max_steps_per_epoch=3, threads=1, **FAST)
    killed, full, resumed = kill_in_third_epoch_and_resume(cfg, tmp_path, monkeypatch)
    assert killed["epoch"] == 2
    if method == "dividemix":
        assert {"w_main", "w_peer"} <= set(killed["method_state"])
    assert_same_checkpoint(full, resumed)


def test_two_network_methods_checkpoint_both_networks_and_dividemix_evaluates_both():
    t = Trainer(TrainConfig(method="dividemix", epochs=3, max_steps_per_epoch=2, threads=1, **FAST))
    t.run_epoch()
    t.run_epoch()  # after the one-epoch warm-up: the GMM split of each network
    state = t.state_dict()
    assert set(state) >= {"peer", "peer_opt", "peer_sched"} and set(state["method_state"]) >= {"w_main", "w_peer"}
    assert state["method_state"]["w_main"].shape == (len(t.y_train),)
    assert not all(torch.equal(p, q) for p, q in zip(t.model.parameters(), t.peer.parameters()))  # own init
    logits = t.eval_model(torch.zeros(2, 1, 8, 8))[0]
    torch.testing.assert_close(logits, (t.model(torch.zeros(2, 1, 8, 8))[0] + t.peer(torch.zeros(2, 1, 8, 8))[0]) / 2)
    assert METHODS["coteachingplus"].union_batches and METHODS["dividemix"].union_batches
    assert not METHODS["pmwnet"].union_batches  # its gold set is the meta set, as MW-Net's


def test_per_sample_losses_are_the_ce_of_each_training_image():
    t = Trainer(TrainConfig(method="dividemix", epochs=2, threads=1, **FAST))
    t.model.train()
    losses = t.per_sample_losses(t.model)
    assert t.model.training  # its mode is restored
    from ebomlc.data.augment import normalize

    t.model.eval()
    with torch.no_grad():
        x = normalize(t.x_train[:5], t.data.mean, t.data.std)
        expected = F.cross_entropy(t.model(x)[0], t.y_train[:5], reduction="none")
    torch.testing.assert_close(losses[:5], expected)
    assert losses.shape == (len(t.y_train),) == (len(t.data.y_gold) + len(t.data.silver_noisy),)


def test_coteaching_plus_needs_a_forget_rate_for_labels_of_unknown_noise():
    from ebomlc.errors import ConfigError
    from ebomlc.methods.schedules import run_noise_level

    class Unknown:
        file_noise_rate = None

        def realised_noise_rate(self):
            return None

    cfg = TrainConfig(method="coteachingplus", dataset="digits").resolved()
    assert run_noise_level(cfg, Unknown()) == cfg.corruption_level
    object.__setattr__(cfg, "noise_file", "labels.pt")
    with pytest.raises(ConfigError, match="--forget_rate"):
        run_noise_level(cfg, Unknown())


def test_bench_times_the_new_methods(tmp_path):
    import json

    from ebomlc.cli import main

    out = tmp_path / "steps.json"
    assert main(["bench", "--models", "digits_cnn", "--methods", "ce", "coteachingplus", "dividemix", "pmwnet",
                 "--steps", "2", "--warmup", "1", "--no_memory", "--epochs", "digits", "--epoch_rounds", "2",
                 "--epoch_steps", "2", "--json", str(out)]) == 0
    steps, epochs = json.loads(out.read_text())
    for result in (steps, epochs):
        assert list(result["methods"]) == ["ce", "coteachingplus", "dividemix", "pmwnet"]
        assert all(m["ratio_to_ce"] > 0 for m in result["methods"].values())


def test_new_methods_run_as_study_trials(ray_session, tmp_path):
    import json

    from tune.launch import run_study

    from .studies import results, trial_dirs

    spec = {"name": "table1_new", "dataset": "digits", "methods": ["coteachingplus", "dividemix", "pmwnet"],
            "options": {"gold_fraction": 0.05, "device": "cpu", "max_steps_per_epoch": 2, "epochs": 2,
                        "corruption_level": 0.6, "threads": 1}}
    path = run_study(spec, storage=str(tmp_path), progress=False)
    trials = trial_dirs(path)
    assert sorted(json.loads((t / "params.json").read_text())["method"] for t in trials) == \
        ["coteachingplus", "dividemix", "pmwnet"]
    for trial in trials:
        rows = results(trial)
        assert [r["epoch"] for r in rows] == [1, 2] and 0.0 <= rows[-1]["test_acc"] <= 1.0


@pytest.mark.parametrize("flags,message", [
    (["--method", "coteachingplus", "--forget_rate", "1.5"], "--forget_rate must lie in"),
    (["--method", "dividemix", "--dividemix_temperature", "0"], "--dividemix_temperature must lie in"),
    (["--method", "dividemix", "--dividemix_warmup", "-1"], "--dividemix_warmup must be a non-negative integer"),
    (["--method", "pmwnet", "--pmwnet_sigma_init", "0"], "--pmwnet_sigma_init must lie in"),
])
def test_bad_options_are_one_line_and_write_nothing(tmp_path, capsys, flags, message):
    from ebomlc.cli import main

    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--gold_fraction", "0.05", "--out", str(out),
                 "--quiet", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("threshold", [0.0, 1.0])  # every sample labelled / every sample unlabelled
def test_dividemix_step_with_one_part_empty(threshold):
    from ebomlc.methods import dividemix_step

    torch.manual_seed(0)
    model, peer = Tiny().double(), Tiny().double()
    cfg = TrainConfig(method="dividemix", dataset="digits", epochs=30, dividemix_warmup=1,
                      dividemix_p_threshold=threshold).resolved()
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, peer)]
    ctx = StepContext(model, None, opts[0], None, cfg, peer=peer, peer_opt=opts[1], epoch=5, steps_per_epoch=4)
    batch = make_batch(n=10)
    batch.index = torch.arange(10)
    batch.second_view = lambda: batch.x_silver + 0.01
    ctx.state.update(w_main=torch.full((10,), 0.5, dtype=torch.float64), w_peer=torch.full((10,), 0.5,
                                                                                             dtype=torch.float64))
    out = dividemix_step(ctx, batch)
    assert float(out["labelled_fraction"]) == (1.0 if threshold == 0.0 else 0.0)
    assert all(torch.isfinite(v) for v in out.values())


def test_unknown_coteach_norm_is_one_clear_line():
    from ebomlc.errors import ConfigError
    with pytest.raises(ConfigError, match="unknown coteach_norm 'mean'; choose one of: batch, selected"):
        TrainConfig(method="coteachingplus", dataset="digits", coteach_norm="mean").resolved()
