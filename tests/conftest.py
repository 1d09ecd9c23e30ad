"""Test-suite settings."""

import os

import torch
from hypothesis import settings

# The models under test are small: one intra-op thread is faster than two, and keeps the suite
# fast when the CI machine's two cores are shared with other work.
torch.set_num_threads(1)

# Property tests draw the same examples on every run by default, so a CI run cannot fail on a
# draw nobody has seen; HYPOTHESIS_PROFILE=explore searches new examples on each run.
settings.register_profile("default-run", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default-run"))
