"""s43_ray: move per-task prediction arrays between Ray workers through S3, by reference, and
prove that the whole cohort arrived.

The public API is pinned by ``tests/test_contracts.py``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
