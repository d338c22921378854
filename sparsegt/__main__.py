"""``python -m sparsegt`` (what ``torchrun -m sparsegt train ...`` runs)."""

import sys

from .cli import main

sys.exit(main())
