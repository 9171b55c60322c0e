"""Training configuration: one dataclass holding every option of ``ebomlc train``.

Defaults are those of the authors' reference command line; method presets (SPEC.md,
"Dynamic-barrier MLC") fill ``inner_steps``, ``rho``, ``delta``, ``xi`` when left as ``None``.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from .departures import VARIANTS, normal_departures, parse_departures, resolve_parts
from .errors import ConfigError

DATASETS = ("digits", "cifar10", "cifar100")  # built in; any other name is an image folder
CORRUPTION_TYPES = ("unif", "flip", "asym", "instance")
MODELS = ("auto", "small_cnn", "resnet32", "resnet18")
GRAD_Q_W = ("fd", "partial")
#: Where validation images and labels come from: held out from the trusted (clean) images, held out from
#: silver with their noisy labels, or the gold set itself reused (the reference codes' choice; not held out).
VAL_SOURCES = ("clean", "noisy", "gold_reused")
#: Co-teaching+'s loss over the selected samples S of a batch B: sum over S divided by |B| or by |S|.
COTEACH_NORMS = ("batch", "selected")

# SPEC.md preset table: K, rho, delta, xi, grad_q_w. Methods without a barrier leave them unset
# (``mlc`` uses only K, its look-ahead length).
PRESETS: dict[str, dict[str, Any]] = {
    "ce": {},
    "gold": {},
    "mlc": {"inner_steps": 1},
    "mlcbome": {"inner_steps": 5, "rho": 1.0, "delta": 0.5, "xi": 1.0, "grad_q_w": "fd", "variant": "paper"},
    # variant inner_step: SPEC.md's equations (the main step from w_1, step 4) + step_f_term, the one part that was
    # better than the equations beyond the seed spread at both noise levels of variants_cifar10_cpu (docs/variants.md)
    "ebomlc": {"inner_steps": 1, "rho": 0.2, "delta": 0.25, "xi": 0.5, "grad_q_w": "fd", "variant": "inner_step"},
}


def fill_presets(options: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``options`` whose ``None`` or absent knobs (K, rho, delta, xi, ...) take the preset of its method."""
    preset = PRESETS.get(str(options.get("method")), {})
    return {**options, **{k: v for k, v in preset.items() if options.get(k) is None}}


@dataclass
class TrainConfig:
    """Every option of one training run. ``resolved()`` fills method presets and validates."""

    method: str = "ebomlc"
    dataset: str = "cifar10"
    optimizer: str = "sgd"
    bs: int = 100
    corruption_type: str = "unif"
    corruption_level: float = 0.4
    gold_fraction: float = 0.02
    val_fraction: float = 0.0  # class-balanced validation images held out of training (0: no validation set)
    val_source: str = "clean"  # clean | noisy | gold_reused (VAL_SOURCES)
    epochs: int = 120
    main_lr: float = 0.1
    meta_lr: float = 3e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: tuple[int, ...] | None = None  # None: 80 and 100 of 120, scaled to `epochs`
    runid: str = "run"
    cls_dim: int = 128
    # Dynamic-barrier knobs; None takes the method's preset.
    inner_steps: int | None = None
    rho: float | None = None
    delta: float | None = None
    xi: float | None = None
    grad_q_w: str | None = None
    variant: str | None = None  # base set of named barrier-step parts (ebomlc.departures); None: preset (paper)
    departures: str | None = None  # "name,-name": parts added to or removed from the variant (a list works too)
    glc_phase1_epochs: int | None = None  # GLC: epochs of the silver-only phase (None: half)
    # Co-teaching+ (None: the published CIFAR values, epochs scaled to `epochs`; ebomlc.methods.coteachingplus)
    forget_rate: float | None = None  # final forget rate (None: the run's noise level)
    coteach_init_epochs: int | None = None  # epochs of plain Co-teaching before disagreement (None: 20 of 200)
    coteach_gradual_epochs: int | None = None  # epochs of the forget-rate ramp (None: 10 of 200)
    coteach_norm: str = "batch"  # the selected samples' CE summed over the batch size ("batch") or averaged ("selected")
    # DivideMix (ebomlc.methods.dividemix)
    dividemix_warmup: int | None = None  # CE warm-up epochs (None: 10 of 300, CIFAR-100 30 of 300)
    dividemix_lambda_u: float | None = None  # unlabelled-loss weight (None: the paper's value for the noise level)
    dividemix_alpha: float = 4.0  # Beta(alpha, alpha) of MixUp
    dividemix_temperature: float = 0.5  # sharpening temperature T
    dividemix_p_threshold: float = 0.5  # clean probability above which a sample is labelled
    # PMW-Net (ebomlc.methods.pmwnet)
    pmwnet_prior_std: float = 1.0  # prior N(0, s^2) on every weight-net parameter
    pmwnet_sigma_init: float = 1e-3  # initial posterior standard deviation
    pmwnet_kl_weight: float = 1.0  # beta: the meta loss is F + beta KL / |gold|
    mix: bool = True
    eps: float = 1e-8
    seed: int = 1
    data_seed: int | None = None  # None: same as `seed`
    data_dir: str | None = None
    download: bool = False
    image_size: int | None = None  # image folders: resize to this square side (None: keep, or the most common)
    model: str = "auto"  # auto: by image side (<=16 small_cnn, <=48 resnet32, larger resnet18)
    # Labels from files instead of synthetic noise (corruption_type/level are then unused).
    noisy_labels: str | None = None  # one label per training image: .npy, .csv, or path,label CSV
    gold_indices: str | None = None  # trusted training images (indices, or paths for image folders)
    noise_file: str | None = None  # CIFAR-10N / CIFAR-100N .pt dict of label arrays
    noise_key: str | None = None  # which labels of noise_file, e.g. worse_label
    noise_index: str | None = None  # each training image's entry in noise_file (image folders in their own order)
    device: str = "auto"
    max_steps_per_epoch: int | None = None  # for quick smoke runs; None = full epochs
    train_subset: int | None = None  # class-balanced, seeded subset of the training images (before the split)
    threads: int | None = None  # torch intra-op threads; None: torch's default (all cores)
    eval_every: int = 1  # evaluate every N epochs (and always after the last)
    eval_subset: int | None = None  # evaluate on a fixed seeded subset of this many test (and silver) images
    blowup_factor: float = 100.0  # a training loss above this many times its first-epoch value ends the run (0: off)

    # ------------------------------------------------------------------
    def resolved(self) -> "TrainConfig":
        """Return a copy with presets filled in; raise ConfigError on a bad value."""
        from .methods import METHODS  # late: methods import config

        c = dataclasses.replace(self)
        _check_choice("method", c.method, sorted(METHODS))
        c.dataset = dataset_name(c.dataset, c.data_dir)
        _check_choice("model", c.model, MODELS)
        _check_choice("corruption_type", c.corruption_type, CORRUPTION_TYPES)
        if c.optimizer != "sgd":
            raise ConfigError(f"unknown optimizer {c.optimizer!r}; only 'sgd' (the paper's recipe) is supported")
        if c.variant is not None:
            _check_choice("variant", c.variant, VARIANTS)
        c = dataclasses.replace(c, **fill_presets(dataclasses.asdict(c)))
        if c.variant is None:
            c.variant = "paper"
        parts = resolve_parts(c.variant, parse_departures(c.departures), c.dataset, c.method)
        c.departures = ",".join(normal_departures(c.variant, parts, c.dataset, c.method))
        if c.data_seed is None:
            c.data_seed = c.seed
        _check_range("corruption_level", c.corruption_level, 0.0, 1.0)
        _check_range("gold_fraction", c.gold_fraction, 0.0, 1.0, low_open=True, high_open=True)
        _check_range("val_fraction", c.val_fraction, 0.0, 1.0, high_open=True)
        _check_choice("val_source", c.val_source, VAL_SOURCES)
        if c.val_source == "gold_reused" and c.val_fraction:
            raise ConfigError(f"--val_source gold_reused validates on the gold set itself and holds nothing out; "
                              f"drop --val_fraction {c.val_fraction:g} (or use --val_source clean or noisy)")
        for name, high in (("rho", 1.0), ("delta", math.inf), ("xi", math.inf)):
            if getattr(c, name) is not None:
                _check_range(name, getattr(c, name), 0.0, high)
        _check_range("main_lr", c.main_lr, 0.0, math.inf, low_open=True)
        _check_range("meta_lr", c.meta_lr, 0.0, math.inf, low_open=True)
        _check_range("momentum", c.momentum, 0.0, 1.0, high_open=True)
        _check_range("weight_decay", c.weight_decay, 0.0, math.inf)
        _check_range("blowup_factor", c.blowup_factor, 0.0, math.inf)
        _check_range("eps", c.eps, 0.0, math.inf)
        _check_choice("coteach_norm", c.coteach_norm, COTEACH_NORMS)
        if c.forget_rate is not None:
            _check_range("forget_rate", c.forget_rate, 0.0, 1.0, high_open=True)
        for name in ("dividemix_lambda_u", "pmwnet_kl_weight"):
            if getattr(c, name) is not None:
                _check_range(name, getattr(c, name), 0.0, math.inf)
        _check_range("dividemix_alpha", c.dividemix_alpha, 0.0, math.inf, low_open=True)
        _check_range("dividemix_temperature", c.dividemix_temperature, 0.0, math.inf, low_open=True)
        _check_range("dividemix_p_threshold", c.dividemix_p_threshold, 0.0, 1.0)
        _check_range("pmwnet_prior_std", c.pmwnet_prior_std, 0.0, math.inf, low_open=True)
        _check_range("pmwnet_sigma_init", c.pmwnet_sigma_init, 0.0, math.inf, low_open=True)
        for name in ("coteach_init_epochs", "dividemix_warmup"):
            value = getattr(c, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ConfigError(f"--{name} must be a non-negative integer, got {value!r}")
        for name in ("bs", "epochs", "cls_dim", "inner_steps", "glc_phase1_epochs", "train_subset", "threads",
                     "eval_every", "eval_subset", "image_size", "coteach_gradual_epochs"):
            value = getattr(c, name)
            if value is None:
                continue
            if not isinstance(value, (int, float)) or value < 1 or int(value) != value:
                raise ConfigError(f"--{name} must be a positive integer, got {getattr(c, name)!r}")
        if c.grad_q_w is not None:
            _check_choice("grad_q_w", c.grad_q_w, GRAD_Q_W)
        if c.max_steps_per_epoch is not None and c.max_steps_per_epoch < 1:
            raise ConfigError("--max_steps_per_epoch must be a positive integer")
        if c.lr_milestones is not None:
            c.lr_milestones = tuple(int(m) for m in c.lr_milestones)
        if c.glc_phase1_epochs is not None and c.glc_phase1_epochs >= c.epochs:
            raise ConfigError(f"--glc_phase1_epochs ({c.glc_phase1_epochs}) must be smaller than --epochs ({c.epochs})")
        _check_label_files(c)
        return c

    @property
    def parts(self) -> frozenset[str]:
        """The named barrier-step parts in force (``ebomlc.departures.PARTS``)."""
        return resolve_parts(self.variant, parse_departures(self.departures), self.dataset, self.method)

    @property
    def has_validation(self) -> bool:
        """True when runs of this config report ``val_acc``/``val_loss`` (a held-out set, or gold reused)."""
        return self.val_source == "gold_reused" or self.val_fraction > 0

    @property
    def labels_from_file(self) -> bool:
        """True when the noisy labels come from --noisy_labels or --noise_file (no synthetic noise)."""
        return self.noisy_labels is not None or self.noise_file is not None

    def milestones(self, epochs: int | None = None) -> tuple[int, ...]:
        """LR decay epochs: the paper's 80 and 100 of 120, scaled to ``epochs`` (default: all)."""
        if self.lr_milestones is not None:
            return self.lr_milestones
        n = self.epochs if epochs is None else epochs
        return tuple(max(1, round(n * m / 120)) for m in (80, 100))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["lr_milestones"] is not None:
            d["lr_milestones"] = list(d["lr_milestones"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
        d = dict(d)
        if d.get("lr_milestones") is not None:
            d["lr_milestones"] = tuple(d["lr_milestones"])
        return cls(**d)


def dataset_name(dataset: str, data_dir: str | None) -> str:
    """The dataset a run names: a built-in one, or an image folder's name (``folder`` becomes the name of
    ``data_dir``'s last component, e.g. ``gray3``); a one-line ConfigError for names that cannot work."""
    if not isinstance(dataset, str) or not dataset.strip():
        raise ConfigError(f"--dataset must be a name, got {dataset!r}; choose digits, cifar10, cifar100 or folder")
    if "/" in dataset or "\\" in dataset:
        raise ConfigError(f"--dataset takes a name, not a path ({dataset!r}); pass --dataset folder --data_dir "
                          f"{dataset}")
    if dataset == "digits" and data_dir is not None:
        raise ConfigError(f"--dataset digits is built in and reads no --data_dir; to train on the images in "
                          f"{data_dir} pass --dataset folder --data_dir {data_dir}")
    if dataset != "folder":
        return dataset
    if data_dir is None or not str(data_dir).strip():
        raise ConfigError("--dataset folder needs --data_dir DIR, a folder with train/<class>/* and test/<class>/*")
    name = os.path.basename(os.path.normpath(os.path.abspath(os.path.expanduser(str(data_dir)))))
    return f"{name}-folder" if name in DATASETS or name in ("folder", "") else name


def _check_label_files(c: TrainConfig) -> None:
    """Consistency of the label-file options; file paths become absolute (runs may start elsewhere)."""
    if c.train_subset is not None and c.labels_from_file:
        raise ConfigError("--train_subset draws from the dataset's own labels; with a label file, list the images "
                          "to use in the file instead")
    if c.noisy_labels is not None and c.noise_file is not None:
        raise ConfigError("--noisy_labels and --noise_file both give the noisy labels; pass only one")
    if c.noise_key is not None and c.noise_file is None:
        raise ConfigError("--noise_key names labels inside a --noise_file (CIFAR-10N/100N .pt); pass --noise_file too")
    if c.noise_file is not None and c.noise_key is None:
        raise ConfigError("--noise_file needs --noise_key, the label set to train on (e.g. worse_label, aggre_label, "
                          "random_label1, noisy_label)")
    if c.noise_index is not None and c.noise_file is None:
        raise ConfigError("--noise_index maps training images to entries of a --noise_file; pass --noise_file too")
    if c.gold_indices is not None and not c.labels_from_file:
        raise ConfigError("--gold_indices goes with --noisy_labels or --noise_file; synthetic noise draws its gold "
                          "set with --gold_fraction")
    for name in ("noisy_labels", "gold_indices", "noise_file", "noise_index"):
        value = getattr(c, name)
        if value is None:
            continue
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            raise ConfigError(f"--{name} must be a file path, got {value!r}")
        path = os.path.abspath(os.path.expanduser(str(value)))
        if not os.path.isfile(path):
            raise ConfigError(f"--{name} file {str(value)!r} does not exist")
        setattr(c, name, path)


def _check_choice(name: str, value: Any, choices) -> None:
    """One line naming the bad ``value`` of option ``name`` and every allowed one, in ``choices``' order."""
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")


def _check_range(name: str, value: float, low: float, high: float,
                 low_open: bool = False, high_open: bool = False) -> None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--{name} must be a number, got {value!r}") from None
    bad = (v < low or v > high or (low_open and v == low) or (high_open and v == high) or math.isnan(v))
    if bad:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ConfigError(f"--{name} must lie in {lo}{low:g}, {high:g}{hi}, got {value!r}")
