"""A run directory: ``config.json``, ``metrics.csv``, ``summary.json``, ``checkpoint.pt`` and, for
meta methods, ``label_correction.csv`` (the K x K [true, corrected] matrix at the end, with a header
row and a first column of class names).

Every file is written atomically after each epoch, so a crash leaves a resumable run.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import signal
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..config import TrainConfig
from ..errors import EbomlcError, StorageError
from ..progress import Progress
from ..provenance import provenance
from .checkpoint import load_torch, save_json, save_text, save_torch, writing
from .lock import LOCK_FILE, RunLock
from .loop import DivergedError, Trainer, resolve_device

CHECKPOINT = "checkpoint.pt"


def metrics_csv(history: list[dict]) -> str:
    """Rows of per-epoch metrics as CSV text (columns: union of keys, in first-seen order)."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


#: Options a resumed run may change: they do not change what the run computes (``epochs`` extends it).
RESUMABLE_CHANGES = ("epochs", "device", "threads", "runid")


def check_run_dir(out: Path, resume: bool) -> None:
    """Refuse to overwrite an existing run, or to resume a directory that holds no run."""
    if resume:
        if not (out / CHECKPOINT).is_file() and not (out / "config.json").is_file():
            raise EbomlcError(f"cannot resume: {out} holds no run ({CHECKPOINT} and config.json are missing); "
                              f"drop --resume to start afresh")
    elif out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        hint = "" if (out / CHECKPOINT).is_file() else " (it has no checkpoint yet: --resume restarts it from epoch 1)"
        raise EbomlcError(f"run directory {out} already exists; pass --resume to continue it{hint}, "
                          f"or choose another --out/--runid")


def read_checkpoint(path: Path) -> dict:
    """The trainer state saved at ``path``, or a one-line EbomlcError for a damaged or foreign file."""
    try:
        state = load_torch(path)
    except EbomlcError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated, empty or foreign: one user problem
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise EbomlcError(f"{path} is damaged or incomplete ({reason}); the run directory is left as it was: "
                          f"restore the file, or start afresh with another --out") from None
    missing = [k for k in ("config", "epoch", "model") if not isinstance(state, dict) or k not in state]
    if missing:
        raise EbomlcError(f"{path} is not an ebomlc checkpoint (no {', '.join(missing)}); start afresh with "
                          f"another --out")
    return state


def saved_config(out: Path) -> tuple[TrainConfig, dict | None]:
    """The run's saved configuration and its checkpoint state (None when killed before the first one)."""
    if (out / CHECKPOINT).is_file():
        state = read_checkpoint(out / CHECKPOINT)
        return TrainConfig.from_dict(state["config"]), state
    try:
        saved = json.loads((out / "config.json").read_text())
        saved.pop("data", None)
        saved.pop("provenance", None)
        return TrainConfig.from_dict(saved), None
    except (OSError, ValueError, EbomlcError) as exc:
        raise EbomlcError(f"{out / 'config.json'} is unreadable ({exc}); start afresh with another --out") from None


def refuse_changes(saved: TrainConfig, asked: TrainConfig, given: Iterable[str]) -> None:
    """Raise unless every option in ``given`` has the same (resolved) value in ``asked`` as in ``saved``,
    apart from :data:`RESUMABLE_CHANGES` (the given options are laid over the saved ones, then resolved)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    old = saved.resolved().to_dict()
    new = dataclasses.replace(saved, **{k: getattr(asked, k) for k in given if k in fields}).resolved().to_dict()
    changed = [k for k in sorted(set(given) - set(RESUMABLE_CHANGES)) if k in old and old[k] != new.get(k)]
    if changed:
        diff = ", ".join(f"--{k} {old[k]!r} -> {new[k]!r}" for k in changed)
        raise EbomlcError(f"--resume continues the run under its saved options, but these differ: {diff}; drop "
                          f"them, or start a new run with another --out (only --epochs, --device, --threads and "
                          f"--runid may change)")


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM; its message says where and how ``--resume`` continues it."""


def train_run(config: TrainConfig, out: str | Path | None = None, resume: bool = False,
              progress: bool = True, epochs: int | None = None, given: Iterable[str] = ()) -> dict:
    """Train ``config`` into run directory ``out`` (default ``runs/<runid>``); return the summary.

    With ``resume`` the run continues from its checkpoint under its saved configuration (``epochs``
    may extend it; a run killed before its first checkpoint restarts from epoch 1); the options named
    in ``given`` must agree with the saved ones. The run holds the directory's lock (:mod:`.lock`)
    throughout: a second writer is refused. All input is validated and the data loaded before
    anything is written. A diverged run (NaN or blown-up loss) still writes ``summary.json`` (with
    ``diverged``) before raising :class:`DivergedError`; a failed write raises a one-line
    :class:`StorageError` with the last good checkpoint intact; Ctrl-C (or SIGTERM turned into it)
    raises :class:`RunInterrupted` saying where the run stopped.
    """
    started = time.perf_counter()
    out = Path(out) if out is not None else Path("runs") / config.runid
    lock = RunLock(out).acquire()
    try:
        check_run_dir(out, resume)
        trainer = _prepare(config, out, resume, epochs, given)
        return _train_locked(trainer, out, resume, progress, started)
    finally:
        lock.release(remove_created=True)  # a directory this run created and left empty goes too


def _prepare(config: TrainConfig, out: Path, resume: bool, epochs: int | None, given: Iterable[str]) -> Trainer:
    """The trainer of a new run, or of the run in ``out`` restored from its checkpoint (nothing written)."""
    state = None
    if resume:
        asked = config
        config, state = saved_config(out)
        refuse_changes(config, asked, given)
        for key in ("device", "threads"):
            if key in given:
                setattr(config, key, getattr(asked, key))
    if epochs is not None:
        done = int(state["epoch"]) if state else 0
        if resume and epochs <= done:
            raise EbomlcError(f"--epochs {epochs}: the run in {out} has done {done} epochs already; give more to "
                              f"extend it")
        config.epochs = epochs
    config = config.resolved()
    trainer = Trainer(config, device=resolve_device(config.device))
    if state is not None:
        trainer.load_state_dict(state)
    return trainer


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the block; one that arrived meanwhile is delivered after it."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _resume_hint(out: Path, saved_epoch: int) -> str:
    """What to do after a failed write in run directory ``out`` whose checkpoint holds ``saved_epoch`` epochs."""
    if saved_epoch:
        return (f"the last good checkpoint (epoch {saved_epoch}) is intact: free space and continue with "
                f"`ebomlc train --resume --out {out}`")
    if (out / "config.json").is_file():
        return f"no epoch was saved yet: free space and continue with `ebomlc train --resume --out {out}`"
    return "nothing was saved: free space and run the same command again"


def _train_locked(trainer: Trainer, out: Path, resume: bool, progress: bool, started: float) -> dict:
    config = trainer.config
    saved_epoch = trainer.epoch  # of the checkpoint on disk
    origin = provenance(trainer.device)
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_json({**config.to_dict(), "data": trainer.data.summary(), "provenance": origin}, out / "config.json")
        bar = Progress(config.runid, config.epochs, enabled=progress)
        bar.note(describe_data(trainer))
        if resume:
            bar.note(f"resuming at epoch {trainer.epoch + 1}" + ("" if saved_epoch else " (no checkpoint yet: from the start)"))
        try:
            while trainer.epoch < config.epochs:
                row = trainer.run_epoch(on_step=lambda i, n: bar.step(trainer.epoch + 1, i, n), on_eval=bar.evaluating)
                with _signals_deferred():  # checkpoint and metrics.csv of one epoch, or neither
                    save_torch(trainer.state_dict(), out / CHECKPOINT)
                    saved_epoch = trainer.epoch
                    save_text(metrics_csv(trainer.history), out / "metrics.csv")
                bar.epoch(row)
        except DivergedError as exc:
            save_json({**trainer.summary(), "diverged": str(exc), "wall_time": time.perf_counter() - started,
                       "provenance": origin}, out / "summary.json")
            raise
        summary = trainer.summary()
        matrix = trainer.label_correction_matrix()
        if matrix is not None:
            k = len(matrix)
            names = trainer.data.class_names or tuple(str(i) for i in range(k))
            header = "true_label," + ",".join(names)
            body = "\n".join(f"{names[i]}," + ",".join(str(int(v)) for v in row) for i, row in enumerate(matrix))
            save_text(header + "\n" + body + "\n", out / "label_correction.csv")
            summary["label_correction_acc"] = float(np.trace(matrix) / matrix.sum())
        summary["wall_time"] = time.perf_counter() - started
        summary["provenance"] = origin
        save_json(summary, out / "summary.json")
        return summary
    except StorageError:
        with writing(out, _resume_hint(out, saved_epoch)):  # the same line (naming its file), how to continue
            raise
    except KeyboardInterrupt as exc:
        if saved_epoch >= config.epochs:
            where = f"stopped after its last epoch ({saved_epoch}, saved in {out / CHECKPOINT}) before summary.json"
        else:
            done = f"epochs 1-{saved_epoch} are saved in {out / CHECKPOINT}" if saved_epoch else "no epoch was saved yet"
            where = f"stopped in epoch {saved_epoch + 1} of {config.epochs}; {done}"
        interrupted = RunInterrupted(f"{where}; continue with: ebomlc train --resume --out {out}")
        interrupted.signum = getattr(exc, "signum", 2)  # SIGINT unless the CLI's SIGTERM handler says otherwise
        raise interrupted from None


def describe_data(trainer: Trainer) -> str:
    """One line on what a run trains on: data, model and the realised noise."""
    d, c = trainer.data, trainer.config
    size = f"{d.in_channels}x{d.image_size}x{d.image_size}"
    text = (f"{c.method} on {d.name} ({d.num_classes} classes, {size}, model {type(trainer.model).__name__}): "
            f"{len(d.silver_index)} silver, {len(d.gold_index)} gold, {int(d.y_test.numel())} test images")
    if d.label_source == "synthetic":
        text += f"; {c.corruption_type} noise at level {c.corruption_level:g}"
    else:
        text += f"; labels from {c.noise_file or c.noisy_labels}" + (f" ({c.noise_key})" if c.noise_key else "")
        if d.file_noise_rate is not None:
            text += f", noise rate {d.file_noise_rate:.2%} over the whole file"
    rate = d.realised_noise_rate()
    return text + (f", realised {rate:.2%} on silver" if rate is not None else ", true labels unknown")


def read_summary(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())
