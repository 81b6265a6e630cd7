"""A :class:`~s43_ray.config.StoreConfig` as both S3 clients need it, once: the region, the
credentials, the SSE-C key, and the retry policy with its one per-config retry log.

The retry policy is botocore's "standard" mode: at most ``max_attempts`` attempts (the first
included), transient failures only (throttling, 5xx, no answer), a sleep of
``random() * min(20, 2 ** (retry - 1))`` seconds before retry number ``retry``. botocore applies
it to boto3's calls itself; :mod:`.s3_fast_get` applies the same to obstore's GETs. Both report
each retried attempt to one :class:`RetryLog`: one WARNING with its attempt number, one count
for the run's summary, one hook for the metrics.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass

from ..config import StoreConfig
from . import hooks

# The name retry warnings have always been logged under (log filters and alert rules match it).
log = logging.getLogger("s43_ray.store")

# botocore's "standard" mode: sleep random() * min(MAX_BACKOFF_S, 2 ** (retry - 1)) seconds.
MAX_BACKOFF_S = 20.0
# SigV4 needs a region; S3-compatible stores (SeaweedFS, Scaleway's endpoints) ignore it.
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Settings:
    """What both clients take from a config (no secrets in ``repr``: they stay wrapped)."""

    cfg: StoreConfig

    @property
    def region(self) -> str | None:
        """The config's region; else us-east-1 for an S3-compatible endpoint, else None (the
        SDK's own chain picks AWS's)."""
        return self.cfg.region or (DEFAULT_REGION if self.cfg.endpoint_url else None)

    @property
    def static_credentials(self) -> tuple[str, str] | None:
        """The key pair the config carries (the embedded server's), else None: the standard
        AWS chain (environment, profile, web identity, instance) of the process."""
        c = self.cfg
        if c.access_key_id and c.secret_access_key:
            return c.access_key_id.value, c.secret_access_key.value
        return None

    @property
    def sse_c_key_b64(self) -> str | None:
        return self.cfg.sse_c_key.value if self.cfg.sse == "sse-c" and self.cfg.sse_c_key else None


def backoff_s(retry: int) -> float:
    """Seconds to sleep before retry number ``retry`` (1 for the second attempt)."""
    return random.random() * min(MAX_BACKOFF_S, float(2 ** (retry - 1)))


class RetryLog:
    """Every retried attempt of one config's requests, whichever client made it."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.retries = 0
        self._lock = threading.Lock()

    def retried(self, operation: str, attempt: int, target: str) -> None:
        """Attempt number ``attempt`` (2 or more) of ``operation`` on ``target`` is under way."""
        with self._lock:
            self.retries += 1
        hooks.retried(operation)
        log.warning("s3 %s retry attempt %d to %s (%s)", operation, attempt, self.endpoint,
                    target)


_LOGS: dict[StoreConfig, RetryLog] = {}
_LOGS_LOCK = threading.Lock()


def retry_log(cfg: StoreConfig) -> RetryLog:
    """The one retry log of ``cfg`` in this process (never evicted: a store's count must not
    restart while it lives; a process meets a handful of configs)."""
    with _LOGS_LOCK:
        return _LOGS.setdefault(cfg, RetryLog(cfg.display_endpoint))
