"""Shared pytest setup.

Hugging Face libraries read their offline switches when they are first imported, so they are set
here, before any test module imports transformers or datasets: a model or data set that is not on
disk then fails at once instead of waiting on the network.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one torch thread, and CI's two cores may be shared."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
