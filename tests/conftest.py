import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Without a GPU the Triton backend's tests run in Triton's CPU interpreter; the kernels read this when they
# are first defined (on the first Triton call), so it must be set before any test calls them.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests are short and deterministic on 2 cores: keep torch to the cores we have.
torch.set_num_threads(min(2, os.cpu_count() or 1))

settings.register_profile(
    "sparsegt", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("sparsegt")


@pytest.fixture
def one_thread():
    """Tiny models on a loaded 2-core machine: one thread avoids OpenMP spin-waits (20x faster here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
