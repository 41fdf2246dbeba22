"""``lsmmail bench --plot FILE.png``: draw the ``--compare`` table as a chart.

Two panels: on the left, lsmmail's ops/s divided by each peer's for every workload (log scale, the line at
1.0 is parity: bars to the right mean lsmmail is faster); on the right, the absolute ops/s of every engine
(log scale, since LMDB's reads and a synced put differ by three orders of magnitude).

matplotlib is an optional extra (``pip install 'lsmmail[bench]'``); :func:`require_matplotlib` lets the CLI
fail before a long run rather than after it. The Agg backend is forced: the bench runs on headless
machines and only ever writes a file.
"""

from __future__ import annotations

import importlib.util
from typing import Any

#: Workloads whose rows are not rates (summarised elsewhere in the table); kept out of the chart.
_SKIP = frozenset({"mailmix_write_amp"})


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise :class:`PlotUnavailable` with the install hint when matplotlib cannot be imported."""
    if importlib.util.find_spec("matplotlib") is None:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'lsmmail[bench]' (or matplotlib)")


def _rates(summary: dict, engine: str, workloads: list[str]) -> list[float | None]:
    eng = summary["engines"].get(engine, {}).get("workloads", {})
    return [eng.get(w, {}).get("ops_per_sec") for w in workloads]


def plot_summary(summary: dict, engines: list[str], workloads: list[str], path: str) -> None:
    """Write the chart of ``summary`` (as produced by ``lsmmail bench --json``) to ``path`` (PNG, SVG or
    PDF by its suffix). Raises :class:`PlotUnavailable` without matplotlib, ``ValueError`` when no
    workload has a rate for lsmmail, and ``OSError`` if the file cannot be written."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [w for w in workloads if w not in _SKIP]
    ours = _rates(summary, "lsmmail", rows)
    rows = [w for w, r in zip(rows, ours, strict=True) if r]
    if not rows:
        raise ValueError("nothing to plot: no workload has an lsmmail rate")
    ours = _rates(summary, "lsmmail", rows)
    peers = [e for e in engines if e != "lsmmail"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) * max(1, len(engines)) / 2 + 2))
    ys = list(range(len(rows)))
    band = 0.8 / max(1, len(peers))
    for i, p in enumerate(peers):
        theirs = _rates(summary, p, rows)
        ratios = [a / b if a and b else 0.0 for a, b in zip(ours, theirs, strict=True)]
        left.barh([y + i * band for y in ys], ratios, height=band, label=f"lsmmail ÷ {p}")
    left.axvline(1.0, color="black", linewidth=1)
    left.set_xscale("log")
    left.set_yticks([y + band * (len(peers) - 1) / 2 for y in ys], rows)
    left.invert_yaxis()
    left.set_xlabel("ratio of ops/s (> 1: lsmmail faster)")
    if peers:
        left.legend(fontsize="small")
    band_r = 0.8 / max(1, len(engines))
    for i, e in enumerate(engines):
        vals: list[Any] = [r or 0.0 for r in _rates(summary, e, rows)]
        right.barh([y + i * band_r for y in ys], vals, height=band_r, label=e)
    right.set_xscale("log")
    right.set_yticks([y + band_r * (len(engines) - 1) / 2 for y in ys], rows)
    right.invert_yaxis()
    right.set_xlabel("ops/s (seek rows: scans/s)")
    right.legend(fontsize="small")
    fig.suptitle(f"lsmmail bench — {summary.get('machine', '')}", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
