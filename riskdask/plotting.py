"""The one place riskdask chooses matplotlib's backend.

A batch engine never opens a window: every figure module gets pyplot from :func:`pyplot`,
which selects the headless ``Agg`` backend before pyplot is first imported (and leaves a
backend alone that the user chose for an interactive session).
"""

from __future__ import annotations

__all__ = ["pyplot"]


def pyplot():
    """``matplotlib.pyplot`` on a non-interactive backend (Agg unless the user chose one)."""
    import os
    import sys

    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
        import matplotlib

        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
