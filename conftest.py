"""Settings for every test run: the tests in tests/ and the docstring examples in src/locedit (doctests)."""

from __future__ import annotations

import os

import torch

# Intra-op threads: on a shared, oversubscribed developer box two spinning OpenMP threads made tiny models 40x
# slower (0.27 s vs 11 s for a 40-token sample), so one thread there; CI has the machine to itself and uses
# both cores. LOCEDIT_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("LOCEDIT_TEST_THREADS", "2" if os.environ.get("CI") else "1")))
