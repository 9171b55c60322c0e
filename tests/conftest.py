import os

import pytest
import torch

os.environ.setdefault("EBOMLC_CACHE", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "ebomlc"))
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits():
    from ebomlc.data import cached_dataset

    return cached_dataset("digits", None)
