"""`python -m navil ...` (also under torchrun)."""
import sys

from navil.cli import main

sys.exit(main())
