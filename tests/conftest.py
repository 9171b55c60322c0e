import os

import pytest
import torch

os.environ.setdefault("EBOMLC_CACHE", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "ebomlc"))
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits():
    from ebomlc.data import cached_dataset

    return cached_dataset("digits", None)


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for a test module (2 CPUs, no dashboard), never a cluster another session runs."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    if started:
        ray.shutdown()
