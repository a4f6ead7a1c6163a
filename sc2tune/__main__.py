"""``python -m sc2tune`` (what ``accelerate launch -m sc2tune train ...`` runs)."""

import sys

from sc2tune.cli import main

sys.exit(main())
