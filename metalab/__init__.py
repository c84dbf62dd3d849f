"""metalab: parameter sweeps locally or on SLURM, and the services their results go to.

The public API is imported lazily so that ``import metalab`` (and the CLI) stay fast.
"""

from __future__ import annotations

from ._version import __version__

__all__ = ["__version__"]
