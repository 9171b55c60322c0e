"""Training: the shared loop, evaluation, checkpoints and run directories."""
from .loop import DivergedError, Trainer, load_data, resolve_device
from .rundir import train_run

__all__ = ["Trainer", "DivergedError", "train_run", "load_data", "resolve_device"]
