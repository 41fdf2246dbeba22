"""lsmmail: an embedded, write-optimised mailbox storage engine.

Layers (each usable alone; arrows point down only): service -> mail -> search -> engine -> native.
"""

from __future__ import annotations

__version__ = "0.1.0"
