"""Every test starts from the same global state, whatever ran before it and in whatever order
(pytest-randomly shuffles the order): the float32 default dtype users run with, and the global
random generators (Python, NumPy, torch) seeded from the test's own name."""

import random
import zlib

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def same_start_for_every_test(request):
    assert torch.get_default_dtype() == torch.float32, "the default dtype was changed before this test"
    seed = zlib.crc32(request.node.nodeid.encode())  # stable across processes, unlike hash()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    yield
    assert torch.get_default_dtype() == torch.float32, "this test changed the default dtype: use a fixture"
