"""``python -m minifit``: the ``minifit`` command (what ``--workers`` starts under mpirun)."""
import sys

from .cli import main

sys.exit(main())
