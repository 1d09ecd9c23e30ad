"""Test-suite settings."""

import torch

# The models under test are small: one intra-op thread is faster than two, and keeps the suite
# fast when the CI machine's two cores are shared with other work.
torch.set_num_threads(1)
