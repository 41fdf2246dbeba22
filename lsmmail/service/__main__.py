"""``python -m lsmmail.service serve|add-user`` (see lsmmail.service.server.main)."""

from __future__ import annotations

import sys

from .server import main

sys.exit(main())
