import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Tests are short and deterministic on 2 cores: keep torch to the cores we have.
torch.set_num_threads(min(2, os.cpu_count() or 1))

settings.register_profile(
    "sparsegt", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("sparsegt")
