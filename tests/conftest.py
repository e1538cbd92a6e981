"""Fixtures every test module may ask for by name."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny matmuls run fastest on one thread, and the suite shares two cores with other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
