"""Command line: ``ebomlc train`` (more subcommands join as the toolkit grows).

Every user error prints one line ``ebomlc: error: ...`` and exits with status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from typing import Sequence

from .config import TrainConfig
from .departures import PARTS, VARIANTS
from .methods import METHODS
from .errors import EbomlcError


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (plus a pointer to --help), not a usage dump."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("run (names and meanings as in the authors' reference code)")
    g.add_argument("--method", default=d.method,
                   help=" | ".join(METHODS) + " (gold: CE on the gold set alone, the floor) (default: %(default)s)")
    g.add_argument("--dataset", default=d.dataset,
                   help="digits (built in) | cifar10 | cifar100 | folder (any image folder given by --data_dir: "
                        "train/<class>/*, test/<class>/*; runs are named after the folder) (default: %(default)s)")
    g.add_argument("--optimizer", default=d.optimizer, help="main-model optimizer; only sgd (default: %(default)s)")
    g.add_argument("--bs", type=int, default=d.bs, help="batch size of silver and of gold (default: %(default)s)")
    g.add_argument("--corruption_type", default=d.corruption_type,
                   help="unif (uniform) | flip (one random other class per class) | asym (the class pairs of "
                        "Patrini et al. 2017: cifar10, cifar100, digits) | instance (instance-dependent, Xia et al. "
                        "2020 style; mean rate = level) (default: %(default)s)")
    g.add_argument("--corruption_level", type=float, default=d.corruption_level,
                   help="noise level r in [0, 1] (default: %(default)s)")
    g.add_argument("--gold_fraction", type=float, default=d.gold_fraction,
                   help="fraction of training images kept clean as the gold set (default: %(default)s)")
    g.add_argument("--val_fraction", type=float, default=d.val_fraction,
                   help="fraction of training images held out as a class-balanced, seeded validation set that is "
                        "never trained on; each evaluation then reports val_acc and val_loss, and summary.json the "
                        "best validation epoch and the test accuracy there (default: %(default)s = no validation set)")
    g.add_argument("--val_source", default=d.val_source, choices=["clean", "noisy", "gold_reused"],
                   help="labels of the validation set: clean (held out of the trusted images before the gold split), "
                        "noisy (held out of the silver images with their noisy labels: no extra clean data needed), "
                        "or gold_reused (the gold set itself, which training sees: NOT held out; the reference "
                        "codes' choice; takes no --val_fraction) (default: %(default)s)")
    g.add_argument("--epochs", type=int, default=None, help="epochs over the silver set (default: 120)")
    g.add_argument("--main_lr", type=float, default=d.main_lr, help="SGD learning rate (default: %(default)s)")
    g.add_argument("--meta_lr", type=float, default=d.meta_lr, help="meta-model Adam learning rate (default: %(default)s)")
    g.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum (default: %(default)s)")
    g.add_argument("--weight_decay", type=float, default=d.weight_decay, help="SGD weight decay (default: %(default)s)")
    g.add_argument("--lr_milestones", type=_int_list, metavar="E1,E2",
                   help="epochs at which the main LR drops 10x (default: 80 and 100 of 120, scaled to --epochs)")
    g.add_argument("--runid", help="run name; the run directory is runs/<runid> unless --out (default: "
                   "METHOD-DATASET-YYYYmmdd-HHMMSS, so runs never collide)")
    g.add_argument("--cls_dim", type=int, default=d.cls_dim, help="label-embedding size of the meta model (default: %(default)s)")
    b = p.add_argument_group("dynamic barrier (mlcbome / ebomlc; unset = the method's preset)")
    b.add_argument("--rho", type=float, help="mixture weight of the upper loss (default: the preset, ebomlc 0.2, mlcbome 1)")
    b.add_argument("--xi", type=float, help="scale of the noisy gradient (default: the preset, ebomlc 0.5, mlcbome 1)")
    b.add_argument("--delta", type=float, help="barrier coefficient (default: the preset, ebomlc 0.25, mlcbome 0.5)")
    b.add_argument("--inner_steps", "--K", type=int, dest="inner_steps", help="inner steps K (default: the preset, ebomlc 1, mlcbome 5; mlc 1)")
    b.add_argument("--grad_q_w", choices=["fd", "partial"], help="main part of grad q (default: fd)")
    b.add_argument("--eps", type=float, default=d.eps,
                   help="added to ||grad q||^2 in the barrier's lambda denominator (default: %(default)s)")
    b.add_argument("--variant", choices=list(VARIANTS),
                   help="named set of barrier-step parts: paper (SPEC.md's equations: EBOMLC's main step starts "
                        "from its one inner step w_1, MLC-D's from the restored w; MLC-D's default), inner_step "
                        "(paper + step_f_term: the clean loss reaches the main model as an SGD step; EBOMLC's "
                        "default, the variant the CPU CIFAR-10 benchmark supports), restore_w (EBOMLC with the main "
                        "step from the restored w: the reading before the SPEC's revision) or reference (the "
                        "authors' code: all its departures; docs/variants.md)")
    b.add_argument("--departures", metavar="PARTS",
                   help="comma-separated parts added to the variant, or removed with a leading '-' (write "
                        "--departures=-NAME,...): " + ", ".join(PARTS) + " (default: none)")
    b.add_argument("--no_mix", action="store_true", help="use all gold in the upper loss (default: mix mode)")
    b.add_argument("--glc_phase1_epochs", type=int,
                   help="glc: epochs of its silver-only first phase (default: half of --epochs)")
    s = p.add_argument_group("Co-teaching+, DivideMix, PMW-Net (docs/methods.md)")
    s.add_argument("--forget_rate", type=float,
                   help="coteachingplus: final forget rate (default: the run's noise level: --corruption_level, or "
                        "for label files the rate against the known clean labels; unknown: pass it)")
    s.add_argument("--coteach_init_epochs", type=int,
                   help="coteachingplus: epochs of plain Co-teaching before disagreement (default: 20 of 200, "
                        "cifar100 5 of 200, scaled to --epochs)")
    s.add_argument("--coteach_gradual_epochs", type=int,
                   help="coteachingplus: epochs over which the forget rate ramps up (default: 10 of 200, scaled; "
                        "a short run needs more: a 20-epoch digits run starves classes below 4)")
    s.add_argument("--coteach_norm", default=d.coteach_norm, choices=["batch", "selected"],
                   help="coteachingplus: divide the selected samples' summed CE by the batch size (default: each "
                        "kept sample weighs what it weighs under CE) or by the number selected (the mean)")
    s.add_argument("--dividemix_warmup", type=int,
                   help="dividemix: CE warm-up epochs (default: 10 of 300, cifar100 30 of 300, scaled)")
    s.add_argument("--dividemix_lambda_u", type=float,
                   help="dividemix: weight of the unlabelled loss (default: the paper's for the noise level)")
    s.add_argument("--dividemix_alpha", type=float, default=d.dividemix_alpha,
                   help="dividemix: MixUp Beta(alpha, alpha) (default: %(default)s)")
    s.add_argument("--dividemix_temperature", type=float, default=d.dividemix_temperature,
                   help="dividemix: sharpening temperature T (default: %(default)s)")
    s.add_argument("--dividemix_p_threshold", type=float, default=d.dividemix_p_threshold,
                   help="dividemix: clean probability above which a sample is labelled (default: %(default)s)")
    s.add_argument("--pmwnet_prior_std", type=float, default=d.pmwnet_prior_std,
                   help="pmwnet: standard deviation of the Gaussian prior (default: %(default)s)")
    s.add_argument("--pmwnet_sigma_init", type=float, default=d.pmwnet_sigma_init,
                   help="pmwnet: initial posterior standard deviation (default: %(default)s)")
    s.add_argument("--pmwnet_kl_weight", type=float, default=d.pmwnet_kl_weight,
                   help="pmwnet: beta, the KL term's weight per gold image (default: %(default)s)")
    r = p.add_argument_group("data, device, output")
    r.add_argument("--seed", type=int, default=d.seed,
                   help="seed of model init, batches and (unless --data_seed) data (default: %(default)s)")
    r.add_argument("--data_seed", type=int, help="seed of the gold/silver split and noise (default: --seed)")
    r.add_argument("--data_dir", help="CIFAR pickles or a train/ test/ class-per-folder image tree (default: "
                   "data/<dataset>; digits is built in)")
    r.add_argument("--download", action="store_true", help="download CIFAR through torchvision")
    r.add_argument("--image_size", type=int, metavar="S",
                   help="image folders: resize every image to S x S (default: keep the size, or the most common "
                        "side when sizes differ)")
    r.add_argument("--model", default=d.model, choices=["auto", "small_cnn", "resnet32", "resnet18"],
                   help="main model; auto picks by image side: small_cnn up to 16 px, resnet32 up to 48 px, "
                        "resnet18 above (default: %(default)s)")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    r.add_argument("--out", help="the run directory itself (default: runs/<runid>)")
    r.add_argument("--resume", action="store_true",
                   help="continue the run in --out (or runs/<runid>) from its checkpoint, under its saved options; "
                        "only --epochs (to extend it), --device and --threads may change")
    r.add_argument("--max_steps_per_epoch", type=int,
                   help="cap steps per epoch for quick smoke runs; evaluation then uses a fixed 1,000 test and silver "
                        "images (or N x --bs if more) unless --eval_subset says otherwise (default: full epochs)")
    r.add_argument("--train_subset", type=int, metavar="N",
                   help="train on N images, N/K per class, drawn by the data seed before the gold/silver split "
                        "(default: all)")
    r.add_argument("--threads", type=int,
                   help="torch threads of this run; set it when runs share cores (default: torch's, all cores)")
    r.add_argument("--eval_every", type=int, default=d.eval_every,
                   help="evaluate every N epochs and after the last (default: %(default)s)")
    r.add_argument("--eval_subset", type=int, metavar="N",
                   help="evaluate on a fixed subset of N test images (and N silver images for label correction), "
                        "the same for every run (default: all)")
    r.add_argument("--blowup_factor", type=float, default=d.blowup_factor,
                   help="end the run as diverged when a training loss exceeds this many times its first-epoch "
                        "value; 0 turns the check off (default: %(default)s)")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    n = p.add_argument_group("your own noisy labels (instead of --corruption_type/--corruption_level)")
    n.add_argument("--noisy_labels", metavar="FILE",
                   help="one label per training image in dataset order: .npy, .csv (one class number per line, "
                        "optional header), or a path,label CSV naming every image of an image-folder --data_dir (default: synthetic noise)")
    n.add_argument("--gold_indices", metavar="FILE",
                   help="trusted training images whose given label is used as gold: indices in dataset order (0-based; "
                        ".npy or one per line) or image paths; default: a class-balanced --gold_fraction draw among "
                        "images whose given label equals the dataset's clean label")
    n.add_argument("--noise_file", metavar="FILE",
                   help="CIFAR-10N / CIFAR-100N label file (.pt dict: clean_label, aggre_label, random_label1..3, "
                        "worse_label; noisy_label for CIFAR-100N); needs --noise_key (default: none)")
    n.add_argument("--noise_key", metavar="KEY", help="label set of --noise_file to train on, e.g. worse_label (default: none)")
    n.add_argument("--noise_index", metavar="FILE",
                   help="for an image-folder --data_dir: each training image's index in --noise_file (its original "
                        "CIFAR index): .npy or one index per line in dataset order, or path,index CSV rows (default: the "
                        "file follows the dataset's order)")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs such as 80,100, got {text!r}") from None


#: Options of `ebomlc train` that are not TrainConfig fields (``no_mix`` is ``mix`` negated).
RUN_FLAGS = ("out", "resume", "quiet", "no_mix")


def _config_from_args(a: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the parsed flags (each flag is the field of the same name; ``--no_mix`` is ``mix``)."""
    import datetime

    values = {f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(a, f.name)}
    values["mix"] = not a.no_mix
    if values.get("epochs") is None:
        values.pop("epochs")
    if values.get("runid") is None:
        values["runid"] = f"{a.method}-{a.dataset}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    return TrainConfig(**values)


def _given_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The ``TrainConfig`` fields the command line ``argv`` (of ``ebomlc train``) sets explicitly."""
    unset = object()
    namespace = argparse.Namespace(**{a.dest: unset for a in parser._actions if a.dest != "help"})
    parsed = vars(parser.parse_args(list(argv), namespace))
    given = {k for k, v in parsed.items() if v is not unset}
    return {"mix" if k == "no_mix" else k for k in given} - set(RUN_FLAGS)


def _cmd_train(a: argparse.Namespace) -> int:
    from .train import train_run

    if a.resume and a.out is None and a.runid is None:
        raise EbomlcError("--resume needs the run: pass --out DIR or --runid NAME")
    config = _config_from_args(a)
    if not a.resume:
        config.resolved()  # fail on bad values before touching the disk
    given = _given_options(a.train_parser, a.train_argv) if a.resume else set()
    summary = train_run(config, a.out, resume=a.resume, progress=not a.quiet, epochs=a.epochs if a.resume else None,
                        given=given)
    out = a.out or f"runs/{config.runid}"
    accuracy = ("no evaluation" if summary["final_test_acc"] is None else
                f"final test accuracy {summary['final_test_acc']:.4f} (best {summary['best_test_acc']:.4f} at epoch "
                f"{summary['best_epoch']})")
    if summary.get("best_val_epoch") is not None:
        accuracy += (f"; test accuracy {summary['test_acc_at_best_val']:.4f} at the best validation epoch "
                     f"{summary['best_val_epoch']} (val_acc {summary['best_val_acc']:.4f})")
    print(f"{accuracy}, {summary['train_time']:.1f}s training, {summary['wall_time']:.1f}s in all; results in {out}")
    return 0


def _add_bench_command(sub) -> None:
    p = sub.add_parser("bench", help="time one training step of each method",
                       description="Time one training step of every method on the same model, batch and "
                       "device (interleaved, median, ratio to ce) and measure each step's peak memory; "
                       "with --epochs, also whole training epochs on real data.")
    p.add_argument("--methods", nargs="+", default=["ce", "mlc", "mlcbome", "ebomlc", "ebomlc:partial", "glc",
                                                    "l2rw", "mwnet", "pmwnet", "coteachingplus", "dividemix"],
                   help="methods to time; METHOD:partial times grad_q_w=partial (default: all)")
    p.add_argument("--models", nargs="*", default=["resnet32", "digits_cnn"], choices=["resnet32", "digits_cnn"],
                   help="ResNet-32 on 3x32x32 and/or the digits CNN on 1x8x8, batches of 100 random images "
                   "(none: skip the step timing)")
    p.add_argument("--epochs", choices=["digits", "cifar10", "cifar100"],
                   help="also time whole training epochs of each method on this dataset (cifar needs --data_dir)")
    p.add_argument("--data_dir", help="where the CIFAR data are (pickles or a train/ test/ image tree)")
    p.add_argument("--epoch_rounds", type=int, default=2,
                   help="epochs per method, interleaved; the first is warm-up when > 1 (default: %(default)s)")
    p.add_argument("--epoch_steps", type=int, help="cap the steps of each timed epoch (CPU: CIFAR epochs are long)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per method (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per method first (default: %(default)s)")
    p.add_argument("--no_memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--json", help="write the results as JSON to this path")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(a: argparse.Namespace) -> int:
    from .bench import run_bench_command  # torch loads only when the command runs

    return run_bench_command(a)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ebomlc", description="Learning with noisy labels by meta label correction "
                     "(MLC, MLC-D, EBOMLC).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = sub.add_parser("train", help="train one run", description="Train one run into a run directory "
                           "(config.json, metrics.csv, summary.json, checkpoint.pt).")
    _add_train_args(train)
    train.set_defaults(func=_cmd_train, train_parser=train)
    _add_bench_command(sub)
    from .correct import add_correct_command

    add_correct_command(sub)
    from tune.cli import add_study_command

    add_study_command(sub)
    from analysis.cli import add_analyze_command

    add_analyze_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command == "train":
        args.train_argv = argv[argv.index("train") + 1:]
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        return args.func(args)
    except EbomlcError as exc:
        print(f"ebomlc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"ebomlc: interrupted: {exc}" if str(exc) else "ebomlc: interrupted; resume with --resume",
              file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)


def _terminate_as_interrupt(signum, _frame) -> None:
    """SIGTERM ends a command as Ctrl-C does (the run says where it stopped), exit 143."""
    exc = KeyboardInterrupt()
    exc.signum = signum
    raise exc


if __name__ == "__main__":
    sys.exit(main())
