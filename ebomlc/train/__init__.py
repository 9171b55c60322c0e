"""Training: the shared loop, evaluation, checkpoints and run directories."""
from .loop import DATA_FIELDS, DivergedError, Trainer, data_key, load_data, resolve_device
from .rundir import train_run

__all__ = ["Trainer", "DivergedError", "train_run", "load_data", "data_key", "DATA_FIELDS", "resolve_device"]
