#!/usr/bin/env bash
# Regenerate docs/leaderboard.md, the leaderboard of benchmark suite FLW-11-v1: train every task's
# agents (benchmarks/train_suite.py: PPO with the device-set policy and SAC or DQN where SB3 has
# one for the action space, training seeds 0-2; the budgets are in that script and each agent's
# .json), then play random actions, every heuristic, MPC, the clairvoyant bound and the agents on
# evaluation seeds 100-104 and report them with rliable. About an hour of training and 30 minutes
# of evaluation on 2 CPU cores; SKIP_TRAINING=1 evaluates the shipped agents only.
set -euo pipefail
PY=${PY:-.venv/bin/python}
FLGYM=${FLGYM:-.venv/bin/fl-gym}
SUITE=FLW-11-v1

if [[ "${SKIP_TRAINING:-0}" != 1 ]]; then
  "$PY" benchmarks/train_suite.py --suite "$SUITE" --seeds 0-2 --jobs 2
fi

"$FLGYM" bench --suite "$SUITE" --seeds 100-104 --agents "models/$SUITE" \
  --out docs/leaderboard --markdown docs/leaderboard.md --jobs 2
