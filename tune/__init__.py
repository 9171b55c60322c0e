"""Ray Tune studies: one YAML spec runs a whole study on a laptop, a GPU box or a Ray cluster.

``spec`` (load and validate specs), ``search`` (Tune's search algorithm, scheduler and space),
``trainable`` (the Tune function trainable around ``ebomlc.train.Trainer``), ``launch``
(``run_study``, ``resume_study``), ``status`` (``study_status``), ``cli`` (``ebomlc study``).
"""
from __future__ import annotations

__all__ = ["load_spec", "run_study", "resume_study", "study_status"]


def __getattr__(name: str):
    """``tune.run_study`` etc. without importing Ray on ``import tune``."""
    if name == "load_spec":
        from .spec import load_spec

        return load_spec
    if name in ("run_study", "resume_study", "study_status"):
        from . import launch

        return getattr(launch, name)
    raise AttributeError(f"module 'tune' has no attribute {name!r}")
