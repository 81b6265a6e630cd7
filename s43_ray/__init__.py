"""s43_ray: move per-task prediction arrays between Ray workers through S3, by reference, and
prove that the whole cohort arrived.

::

    import s43_ray

    store = s43_ray.open_store("s3://bucket/s43-predictions")
    run = store.start_run("exp-42", members=["m0", "m1"])
    refs = ray.get([pod.remote(run, m) for m in run])   # pod: run.persist(member, arrays)
    assert run.gate(refs).passed
    table = run.read_table()                             # verified against the verdict

The names below are the public API, pinned by ``tests/test_contracts.py`` and documented in
``docs/api.md``. They load on first use, so ``import s43_ray`` stays cheap (no Ray, no boto3).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .api.commands import gate_run, report_run, run_cohort
    from .api.run import Run
    from .api.store import Store, local_store, open_store
    from .errors import GateFailed, InputError, LoadError, S43Error, StoreError
    from .gate import Verdict
    from .ops.report import RunReport
    from .ops.runs import RunListing
    from .summary import Summary
    from .task import PredictionRef

# name -> the module that defines it
_EXPORTS = {
    "open_store": "s43_ray.api.store",
    "local_store": "s43_ray.api.store",
    "Store": "s43_ray.api.store",
    "Run": "s43_ray.api.run",
    "run_cohort": "s43_ray.api.commands",
    "gate_run": "s43_ray.api.commands",
    "report_run": "s43_ray.api.commands",
    "PredictionRef": "s43_ray.task",
    "Verdict": "s43_ray.gate",
    "Summary": "s43_ray.summary",
    "RunReport": "s43_ray.ops.report",
    "RunListing": "s43_ray.ops.runs",
    "S43Error": "s43_ray.errors",
    "InputError": "s43_ray.errors",
    "StoreError": "s43_ray.errors",
    "LoadError": "s43_ray.errors",
    "GateFailed": "s43_ray.errors",
}

# Modules a user reaches as attributes: the error tree, the events, the codecs.
_SUBMODULES = frozenset({"errors", "events", "codec", "keys", "config"})

__all__ = [
    "GateFailed",
    "InputError",
    "LoadError",
    "PredictionRef",
    "Run",
    "RunListing",
    "RunReport",
    "S43Error",
    "Store",
    "StoreError",
    "Summary",
    "Verdict",
    "__version__",
    "gate_run",
    "local_store",
    "open_store",
    "report_run",
    "run_cohort",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        if name in _SUBMODULES:  # s43_ray.errors, s43_ray.events: usable after `import s43_ray`
            return importlib.import_module(f"s43_ray.{name}")
        raise AttributeError(f"module 's43_ray' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
