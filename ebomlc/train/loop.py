"""The one training loop. A method contributes only its step function (``ebomlc.methods``).

``Trainer`` owns the models, optimizers, LR schedule and RNG streams; ``state_dict`` /
``load_state_dict`` capture all of it, so a resumed run continues exactly (bit-identical on CPU).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch

from ..config import TrainConfig
from ..data import NoisyData, build_labelled_data, build_noisy_data, cached_dataset, given_labels, training_subset
from ..data.labels import read_gold_list
from ..data.augment import normalize, random_crop_flip
from ..data.batches import GoldStream, epoch_batches, steps_per_epoch
from ..data.noise import class_balanced_subset
from ..errors import EbomlcError
from ..methods import METHODS, Batch, StepContext
from ..models import build_main_model
from .allocator import retain_freed_cpu_memory
from .evaluate import MeanLogits, evaluate_test, evaluate_val, label_correction


class DivergedError(EbomlcError):
    """A training loss became NaN or infinite, or blew up (``blowup_factor``)."""


#: Training losses watched for a blow-up.
LOSS_KEYS = ("train_loss", "upper_loss", "lower_loss")
#: Test and silver images a run capped by ``max_steps_per_epoch`` evaluates on (unless ``eval_subset``).
CAPPED_EVAL_IMAGES = 1000
#: Added to ``seed`` for the initial weights of a two-network method's second network.
PEER_SEED_OFFSET = 7919


def evaluation_size(config: TrainConfig) -> int | None:
    """Test (and silver) images evaluated: ``eval_subset``, else for a run capped by ``max_steps_per_epoch``
    the larger of 1,000 and the images it trains on per epoch, else all (None)."""
    if config.eval_subset is not None or config.max_steps_per_epoch is None:
        return config.eval_subset
    return max(CAPPED_EVAL_IMAGES, config.max_steps_per_epoch * config.bs)


def best_validation(history: list[dict]) -> dict:
    """The papers' protocol, derived from the epoch rows (so it survives resume): ``best_val_epoch`` (the
    first evaluated epoch of highest ``val_acc``), its ``best_val_acc`` and ``test_acc_at_best_val``, and
    ``final_val_acc``; empty when no row has ``val_acc``."""
    rows = [r for r in history if "val_acc" in r]
    if not rows:
        return {}
    best = rows[int(np.argmax([r["val_acc"] for r in rows]))]
    return {"best_val_epoch": best["epoch"], "best_val_acc": best["val_acc"],
            "test_acc_at_best_val": best["test_acc"], "final_val_acc": rows[-1]["val_acc"]}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise EbomlcError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EbomlcError(f"--device {name} asked for, but torch sees no CUDA GPU; use --device cpu")
    return dev


#: The TrainConfig fields that determine a run's data: runs equal on these share the same NoisyData.
DATA_FIELDS = ("dataset", "data_dir", "download", "corruption_type", "corruption_level", "gold_fraction",
               "data_seed", "noisy_labels", "gold_indices", "noise_file", "noise_key", "noise_index", "train_subset", "image_size",
               "val_fraction", "val_source")


def data_key(config: TrainConfig) -> tuple:
    """A hashable key of everything ``load_data`` reads from a resolved ``config`` (for caches)."""
    return tuple(getattr(config, name) for name in DATA_FIELDS)


def load_data(config: TrainConfig, device: torch.device) -> NoisyData:
    """The noisy dataset of a resolved config; the raw images are memoised per process."""
    raw = cached_dataset(config.dataset, config.data_dir, config.download, config.image_size)
    if config.train_subset is not None:
        raw = training_subset(raw, class_balanced_subset(raw.y_train, raw.num_classes, config.train_subset,
                                                         config.data_seed))
    if config.labels_from_file:
        given, clean, file_rate = given_labels(raw, config.noisy_labels, config.noise_file, config.noise_key,
                                               config.noise_index)
        gold = read_gold_list(config.gold_indices, len(given), raw.train_paths) if config.gold_indices else None
        return build_labelled_data(raw, given, config.gold_fraction, config.data_seed, device, clean=clean, gold=gold,
                                   file_noise_rate=file_rate, val_fraction=config.val_fraction,
                                   val_source=config.val_source)
    return build_noisy_data(raw, config.corruption_type, config.corruption_level, config.gold_fraction,
                            config.data_seed, device, val_fraction=config.val_fraction, val_source=config.val_source)


class Trainer:
    """Training state of one run plus ``run_epoch`` and ``fit``."""

    def __init__(self, config: TrainConfig, data: NoisyData | None = None, device: torch.device | None = None):
        self.config = config = config.resolved()
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.method = METHODS[config.method]
        self.device = device or resolve_device(config.device)
        if self.device.type == "cpu":
            retain_freed_cpu_memory()
        self.data = data if data is not None else load_data(config, self.device)
        self.eval_data = self.data.evaluation_view(evaluation_size(config))
        self._lc_matrix, self._lc_epoch = None, -1
        d = self.data
        torch.manual_seed(config.seed)
        self.model = build_main_model(config.model, d.num_classes, d.in_channels, d.image_size).to(self.device)
        self.meta = None
        self.meta_opt = None
        if self.method.build_meta is not None:
            self.meta = self.method.build_meta(self.model.feature_dim, d.num_classes, config).to(self.device)
            self.meta_opt = torch.optim.Adam(self.meta.parameters(), lr=config.meta_lr, amsgrad=True)
        self.opt, self.sched = self._main_optimizer(self.model, config.epochs)
        self.peer, self.peer_opt, self.peer_sched = None, None, None
        if self.method.two_networks:  # its own seeded init; the global RNG stream is left as it was
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed + PEER_SEED_OFFSET)
                self.peer = build_main_model(config.model, d.num_classes, d.in_channels, d.image_size)
            self.peer.to(self.device)
            self.peer_opt, self.peer_sched = self._main_optimizer(self.peer, config.epochs)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.gold_stream = GoldStream(len(d.y_gold), self.generator, self.device)
        if self.method.union_batches:
            self.x_train = torch.cat([d.x_silver, d.x_gold])
            self.y_train = torch.cat([d.silver_noisy, d.y_gold])
        else:
            self.x_train, self.y_train = d.x_silver, d.silver_noisy
        self.epoch = 0
        self.train_time = 0.0
        self.history: list[dict] = []
        self.ctx = StepContext(self.model, self.meta, self.opt, self.meta_opt, config, peer=self.peer,
                               peer_opt=self.peer_opt)

    def _main_optimizer(self, model: torch.nn.Module, epochs: int):
        """SGD (momentum, weight decay) with the MultiStepLR schedule scaled to ``epochs``."""
        cfg = self.config
        opt = torch.optim.SGD(model.parameters(), lr=cfg.main_lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay)
        return opt, torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.milestones(epochs)), gamma=0.1)

    def reset_main_model(self, remaining_epochs: int, seed_offset: int) -> None:
        """Re-initialise the main model (seeded) with a fresh optimizer and schedule for the
        remaining epochs (GLC's second phase)."""
        d = self.data
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed + seed_offset)
            fresh = build_main_model(self.config.model, d.num_classes, d.in_channels, d.image_size)
        self.model.load_state_dict(fresh.state_dict())
        self.opt, self.sched = self._main_optimizer(self.model, remaining_epochs)
        self.ctx.opt = self.opt

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "config": self.config.to_dict(), "epoch": self.epoch, "train_time": self.train_time,
            "history": self.history, "model": self.model.state_dict(), "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "meta": self.meta.state_dict() if self.meta is not None else None,
            "meta_opt": self.meta_opt.state_dict() if self.meta_opt is not None else None,
            "method_state": self.ctx.state,
            **({"peer": self.peer.state_dict(), "peer_opt": self.peer_opt.state_dict(),
                "peer_sched": self.peer_sched.state_dict()} if self.peer is not None else {}),
            "generator": self.generator.get_state(), "gold_stream": self.gold_stream.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        if self.meta is not None:
            self.meta.load_state_dict(state["meta"])
            self.meta_opt.load_state_dict(state["meta_opt"])
            for group in self.meta_opt.param_groups:  # this config's meta_lr, not the saved one (PBT mutates it)
                group["lr"] = self.config.meta_lr
        if self.peer is not None:
            self.peer.load_state_dict(state["peer"])
            self.peer_opt.load_state_dict(state["peer_opt"])
            self.peer_sched.load_state_dict(state["peer_sched"])
        self.ctx.state = {k: v.to(self.device) if torch.is_tensor(v) else v
                          for k, v in state.get("method_state", {}).items()}
        self.generator.set_state(state["generator"])
        self.gold_stream.load_state_dict(state["gold_stream"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epoch, self.train_time = int(state["epoch"]), float(state["train_time"])
        self.history = list(state["history"])

    def values_in_force(self, names: tuple[str, ...]) -> dict[str, float]:
        """``current_<name>``: the value of each option the next step reads (``meta_lr`` from the
        optimizer itself), recorded per epoch by schedules such as PBT."""
        out = {}
        for name in names:
            value = getattr(self.config, name)
            if name == "meta_lr" and self.meta_opt is not None:
                value = self.meta_opt.param_groups[0]["lr"]
            out[f"current_{name}"] = value
        return out

    # ------------------------------------------------------------------ epochs
    @property
    def steps_per_epoch(self) -> int:
        n = steps_per_epoch(len(self.y_train), self.config.bs)
        cap = self.config.max_steps_per_epoch
        return min(n, cap) if cap else n

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        d = self.data
        return normalize(random_crop_flip(x, d.pad, d.flip, self.generator), d.mean, d.std)

    def _batch(self, index: torch.Tensor) -> Batch:
        def second_view() -> torch.Tensor:
            return self._augment(self.x_train[index])

        if self.method.gold_only:  # ``index`` only paces the epoch: no silver image is read
            gold = self.gold_stream.next(len(index))
            return Batch(self._augment(self.data.x_gold[gold]), self.data.y_gold[gold])
        if self.method.union_batches:
            return Batch(self._augment(self.x_train[index]), self.y_train[index], index=index,
                         second_view=second_view)
        gold = self.gold_stream.next(len(index))
        x = self._augment(torch.cat([self.x_train[index], self.data.x_gold[gold]]))
        n = len(index)
        return Batch(x[:n], self.y_train[index], x[n:], self.data.y_gold[gold], index=index, second_view=second_view)

    @torch.no_grad()
    def per_sample_losses(self, model: torch.nn.Module, chunk: int = 1000) -> torch.Tensor:
        """``l_i = CE(f(x_i), y~_i)`` of ``model`` (eval mode, un-augmented images) on every training image,
        in the order of the training set: the per-epoch pass of methods such as DivideMix."""
        mode = model.training
        model.eval()
        d = self.data
        losses = torch.cat([torch.nn.functional.cross_entropy(
            model(normalize(self.x_train[i:i + chunk], d.mean, d.std))[0].float(), self.y_train[i:i + chunk],
            reduction="none") for i in range(0, len(self.y_train), chunk)])
        model.train(mode)
        return losses

    @property
    def eval_model(self) -> torch.nn.Module:
        """The model evaluated: the main one, or both networks' mean logits (``Method.ensemble``)."""
        return MeanLogits(self.model, self.peer) if self.method.ensemble else self.model

    def run_epoch(self, on_step: Callable[[int, int], None] | None = None, evaluate: bool = True,
                  on_eval: Callable[[str, int, int], None] | None = None) -> dict:
        """Train one epoch, evaluate, append and return the epoch's metrics row. Evaluation (test and
        label-correction metrics) runs every ``eval_every`` epochs and after the last, on ``eval_subset``
        images (capped runs: :func:`evaluation_size`); ``evaluate=False`` leaves it out (timing runs).
        ``on_step(step, steps)`` and ``on_eval(what, done, total)`` report progress."""
        cfg = self.config
        steps = self.steps_per_epoch
        self.ctx.epoch, self.ctx.steps_per_epoch, self.ctx.step_in_epoch = self.epoch, steps, 0
        start = time.perf_counter()  # the epoch's time includes a method's per-epoch pass
        if self.method.on_epoch_start is not None:
            self.method.on_epoch_start(self)
        self.model.train()
        for module in (self.meta, self.peer):
            if module is not None:
                module.train()
        lr = self.ctx.lr
        totals: dict[str, torch.Tensor] = {}
        for i, index in enumerate(epoch_batches(len(self.y_train), cfg.bs, self.generator, self.device)):
            if i == steps:
                break
            self.ctx.step_in_epoch = i
            out = self.method.step(self.ctx, self._batch(index))
            for key, value in out.items():
                totals[key] = totals[key] + value if key in totals else value.detach().clone()
            if on_step is not None:
                on_step(i + 1, steps)
        self.sched.step()
        if self.peer_sched is not None:
            self.peer_sched.step()
        row = {key: float(value) / steps for key, value in totals.items()}
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        epoch_time = time.perf_counter() - start
        self._check_losses(row)
        self.epoch += 1
        self.train_time += epoch_time
        row = {"epoch": self.epoch, "lr": lr, **row}
        if evaluate and (self.epoch % cfg.eval_every == 0 or self.epoch >= cfg.epochs):
            start = time.perf_counter()
            row.update(evaluate_test(self.eval_model, self.eval_data, on_eval))
            if self.eval_data.y_val is not None:
                row.update(evaluate_val(self.eval_model, self.eval_data, on_eval))
            if self.method.corrects_labels:
                lc, self._lc_matrix = label_correction(self.model, self.meta, self.eval_data, on_eval)
                self._lc_epoch = self.epoch
                row.update(lc)
            row["eval_time"] = time.perf_counter() - start
        row["epoch_time"] = epoch_time
        row["train_time"] = self.train_time
        self.history.append(row)
        return row

    def _check_losses(self, row: dict[str, float]) -> None:
        """Raise DivergedError on a non-finite training loss, or on one above ``blowup_factor`` times its
        first-epoch value (a blow-up that has not reached inf yet)."""
        bad = sorted(k for k, v in row.items() if not math.isfinite(v))
        if bad:
            raise DivergedError(f"training diverged at epoch {self.epoch + 1}: non-finite {', '.join(bad)} "
                                f"(lower --main_lr or --meta_lr)")
        first = self.history[0] if self.history else row
        factor = self.config.blowup_factor
        for key in LOSS_KEYS:
            if factor and key in row and key in first and abs(first[key]) > 0 and row[key] > factor * abs(first[key]):
                raise DivergedError(f"training blew up at epoch {self.epoch + 1}: {key} {row[key]:.4g} is over "
                                    f"{factor:g}x its first-epoch value {first[key]:.4g} (lower --main_lr or "
                                    f"--meta_lr; --blowup_factor sets the bound, 0 turns the check off)")

    def label_correction_matrix(self) -> np.ndarray | None:
        """``[true, corrected]`` counts of the meta model on silver, now (None without true labels); the
        last evaluation's when it was of this epoch (no second pass)."""
        if not self.method.corrects_labels or self.data.silver_true is None:
            return None
        if self._lc_epoch != self.epoch or self._lc_matrix is None:
            self._lc_matrix = label_correction(self.model, self.meta, self.eval_data)[1]
            self._lc_epoch = self.epoch
        return self._lc_matrix.numpy()

    def summary(self) -> dict:
        evaluated = [r for r in self.history if "test_acc" in r]
        accs = [r["test_acc"] for r in evaluated]
        best = int(np.argmax(accs)) if accs else -1
        return {
            "method": self.config.method, "epochs": self.epoch,
            "final_test_acc": accs[-1] if accs else None,
            "best_test_acc": accs[best] if accs else None,  # optimistic: max over evaluated epochs
            "best_epoch": evaluated[best]["epoch"] if accs else None,
            **best_validation(self.history),
            "train_time": self.train_time,
            "seconds_per_epoch": self.train_time / self.epoch if self.epoch else None,
            **self.data.summary(),
        }
