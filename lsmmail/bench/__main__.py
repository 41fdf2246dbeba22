"""``python -m lsmmail.bench``: same as ``lsmmail bench``."""

import sys

from . import main

raise SystemExit(main(sys.argv[1:]))
