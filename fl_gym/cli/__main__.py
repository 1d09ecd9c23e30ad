"""``python -m fl_gym.cli``."""

from fl_gym.cli import main

raise SystemExit(main())
