"""``ebomlc correct RUN_DIR``: the meta model's corrected label for every silver image of a run.

One row per silver (noisy-labelled) training image: ``index`` (into the training set), ``path``
(image folders only), ``given_label``, ``corrected_label`` (argmax of the meta model's corrected-
label distribution), ``given_class`` and ``corrected_class`` (their names, when the dataset names
its classes), ``confidence`` (its probability), ``given_label_prob`` (the probability the meta model
leaves on the given label) and ``changed``. Rows are sorted by ascending
``given_label_prob``, so the likeliest labelling mistakes come first.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .errors import ConfigError, EbomlcError

if TYPE_CHECKING:  # numpy, torch and pandas are imported lazily: the CLI starts without them
    import numpy as np
    import pandas as pd
    import torch

    from .train import Trainer

COLUMNS = ("index", "path", "given_label", "corrected_label", "given_class", "corrected_class", "confidence",
           "given_label_prob", "changed")
DEFAULT_NAME = "corrected_labels.csv"
TRIAL_STATE = "trainer.pt"  # tune.trainable.STATE_FILE: the trainer state inside a study checkpoint


def correction_table(probs: torch.Tensor | np.ndarray, given: torch.Tensor | np.ndarray,
                     index: np.ndarray, paths: Sequence[str] | None = None,
                     class_names: Sequence[str] | None = None) -> "pd.DataFrame":
    """The table from corrected-label probabilities ``[n, K]`` of silver images with labels
    ``given`` at training indices ``index``; likeliest mistakes first."""
    import numpy as np
    import pandas as pd
    import torch

    p = probs.detach().cpu().double().numpy() if torch.is_tensor(probs) else np.asarray(probs, dtype=np.float64)
    given = given.detach().cpu().numpy() if torch.is_tensor(given) else np.asarray(given)
    given = given.astype(np.int64)
    index = np.asarray(index, dtype=np.int64)
    corrected = p.argmax(1)
    rows = np.arange(len(p))
    table = pd.DataFrame({"index": index})
    if paths is not None:
        table["path"] = [paths[i] for i in index]
    table["given_label"] = given
    table["corrected_label"] = corrected
    if class_names is not None:
        names = np.asarray(class_names, dtype=object)
        table["given_class"], table["corrected_class"] = names[given], names[corrected]
    table["confidence"] = p[rows, corrected]
    table["given_label_prob"] = p[rows, given]
    table["changed"] = corrected != given
    order = np.lexsort((index, table["given_label_prob"].to_numpy()))  # ascending given_label_prob, ties by index
    return table.iloc[order].reset_index(drop=True)


def require_label_correcting(method: str, what: str) -> None:
    """Raise unless ``method`` trains a label-correcting meta model; ``what`` says where it comes from
    (``"run DIR was trained with"``)."""
    from .methods import METHODS

    if method not in METHODS or not METHODS[method].corrects_labels:
        fixers = ", ".join(m for m, v in METHODS.items() if v.corrects_labels)
        raise ConfigError(f"{what} --method {method}, which has no label-correcting meta model; "
                          f"use one of {fixers}")


def trainer_corrections(trainer: "Trainer", paths: Sequence[str] | None = None) -> "pd.DataFrame":
    """:func:`correction_table` of a trainer's current main and meta model on its silver set."""
    from .train.evaluate import corrected_labels

    require_label_correcting(trainer.config.method, "this trainer was built with")
    d = trainer.data
    probs = corrected_labels(trainer.model, trainer.meta, d)
    return correction_table(probs, d.silver_noisy, d.silver_index, paths, d.class_names)


def find_checkpoint(run_dir: Path) -> Path:
    """The trainer state of ``run_dir``: an ``ebomlc train`` run (``checkpoint.pt``), a Ray Tune trial
    directory (its latest ``checkpoint_NNNNNN/trainer.pt``) or one such checkpoint folder."""
    from .train.rundir import CHECKPOINT

    if not run_dir.is_dir():
        raise EbomlcError(f"run directory {str(run_dir)!r} does not exist")
    for name in (CHECKPOINT, TRIAL_STATE):
        if (run_dir / name).is_file():
            return run_dir / name
    # the newest write, then the highest number (a restored trial may renumber from an older checkpoint)
    trial = sorted(run_dir.glob(f"checkpoint_*/{TRIAL_STATE}"), key=lambda p: (p.stat().st_mtime_ns, p.parent.name))
    if trial:
        return trial[-1]
    raise EbomlcError(f"{run_dir} has no {CHECKPOINT} and no checkpoint_*/{TRIAL_STATE}; point at a run directory "
                      f"of `ebomlc train` or a trial directory of a study")


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple["Trainer", Sequence[str] | None]:
    """The trained models of a run (or study trial) directory with its data rebuilt from the saved
    configuration, and the training image paths (None unless an image folder)."""
    import torch

    from .config import TrainConfig
    from .data import cached_dataset
    from .train import Trainer, resolve_device
    from .train.rundir import read_checkpoint

    run_dir = Path(run_dir)
    file = find_checkpoint(run_dir)
    state = read_checkpoint(file)
    try:
        config = TrainConfig.from_dict(state["config"])
    except EbomlcError as exc:
        raise EbomlcError(f"{file}: {exc}") from None
    require_label_correcting(config.method, f"run {run_dir} was trained with")
    config.device = device
    config = config.resolved()
    dev = resolve_device(device)
    with torch.random.fork_rng(devices=[]):  # Trainer seeds the global RNG; leave the caller's alone
        trainer = Trainer(config, device=dev)
    _check_same_data(run_dir, trainer.data.summary())
    trainer.model.load_state_dict(state["model"])
    trainer.meta.load_state_dict(state["meta"])
    trainer.epoch = int(state["epoch"])
    paths = cached_dataset(config.dataset, config.data_dir, config.download, config.image_size).train_paths
    return trainer, paths


def _check_same_data(run_dir: Path, rebuilt: dict) -> None:
    """The rebuilt split and labels must be the run's (label files or data may have changed)."""
    try:
        saved = json.loads((run_dir / "config.json").read_text()).get("data", {})
    except (OSError, ValueError):
        return  # no record to compare with: trust the configuration
    keys = ("n_gold", "n_silver", "realised_noise_rate", "labels_sha1")
    diff = [k for k in keys if k in saved and k in rebuilt and saved[k] != rebuilt[k]]
    if diff:
        raise EbomlcError(f"the data rebuilt from {run_dir}/config.json differs from the run's ({', '.join(diff)}): "
                          f"its label files or --data_dir changed since training")


def correct_run(run_dir: str | Path, device: str = "cpu") -> "pd.DataFrame":
    """The corrected-label table of a trained run directory (see the module docstring)."""
    trainer, paths = load_run(run_dir, device)
    return trainer_corrections(trainer, paths)


def add_correct_command(sub) -> None:
    p = sub.add_parser("correct", help="export the meta model's corrected labels of a run",
                       description="Write, for every silver image of a trained mlc/mlcbome/ebomlc run, its given "
                       "label, the meta model's corrected label and confidence, and whether it changed; the "
                       "likeliest labelling mistakes come first (ascending probability of the given label).")
    p.add_argument("run_dir", help="run directory of `ebomlc train`, or a study trial directory (its latest "
                   "checkpoint_NNNNNN/ is used) or one of its checkpoint folders")
    p.add_argument("--out", help=f"CSV file to write (default: RUN_DIR/{DEFAULT_NAME})")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    p.set_defaults(func=_cmd_correct)


def _cmd_correct(a) -> int:
    from .train.checkpoint import save_text

    table = correct_run(a.run_dir, a.device)
    out = Path(a.out) if a.out else Path(a.run_dir) / DEFAULT_NAME
    if out.is_dir():
        raise EbomlcError(f"--out {str(out)!r} is a directory; give a file name such as corrected.csv")
    save_text(table.to_csv(index=False, float_format="%.6f", lineterminator="\n"), out)
    changed = int(table["changed"].sum())
    print(f"wrote {len(table)} silver images to {out}; the meta model changes {changed} labels "
          f"(likeliest mistakes first)")
    return 0
