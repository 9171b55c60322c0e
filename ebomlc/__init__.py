"""ebomlc: learning with noisy labels by meta label correction (MLC, MLC-D, EBOMLC)."""
from .config import TrainConfig
from .errors import ConfigError, DataError, EbomlcError

__version__ = "0.1.0"

__all__ = ["TrainConfig", "EbomlcError", "ConfigError", "DataError", "train", "__version__"]


def train(config: TrainConfig | None = None, out=None, resume: bool = False, progress: bool = True, **options):
    """Train one run: ``ebomlc.train(method="ebomlc", dataset="digits", epochs=5, out="runs/x")``.

    With ``resume=True`` the run in ``out`` continues under its saved options; ``options`` given then must
    agree with them (``epochs`` extends the run; ``device`` and ``threads`` may change)."""
    from .train import train_run

    config = config or TrainConfig(**options)
    epochs = options.get("epochs") if resume else None
    return train_run(config, out, resume=resume, progress=progress, epochs=epochs, given=set(options))


_train_api = train  # ``ebomlc.train`` becomes the subpackage once imported; it stays callable (train/__init__)
