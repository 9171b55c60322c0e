"""Training: the shared loop, evaluation, checkpoints and run directories."""
import sys
import types

from .loop import DATA_FIELDS, DivergedError, Trainer, data_key, load_data, resolve_device
from .rundir import train_run

__all__ = ["Trainer", "DivergedError", "train_run", "load_data", "data_key", "DATA_FIELDS", "resolve_device"]


class _CallableModule(types.ModuleType):
    """Importing this subpackage sets the attribute ``ebomlc.train`` to it, hiding the function
    ``ebomlc.train(...)`` of the top-level API; calling the module runs that function instead."""

    def __call__(self, *args, **kwargs):
        from .. import _train_api

        return _train_api(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
