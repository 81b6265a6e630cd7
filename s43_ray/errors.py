"""The project's own error tree. botocore's and obstore's exceptions stop in ``stores/``.

::

    S43Error                       base; carries ``exit_code`` and ``error_class``
    ├── InputError                 bad input or usage (exit 2), raised before anything is written
    │   ├── InvalidRunId           a run id that is empty, too long, or has a forbidden character
    │   ├── InvalidMember          a member name that cannot be a key segment
    │   ├── InvalidStoreUrl        a ``--store`` value that is not ``s3://BUCKET[/PREFIX]``
    │   ├── InvalidSetting         a config field outside what it accepts (names the field)
    │   ├── InvalidPredictor       a ``--predictor`` that is not an importable ``module:function``
    │   ├── UnsafeArray            an array the codecs refuse to write (object dtype, bad name)
    │   └── SseKeyRequired         an SSE-C object read without its customer key
    ├── StoreError                 the store could not serve a request (exit 3)
    │   ├── StoreUnreachable       connection refused, DNS failure, timeout after retries
    │   ├── AccessDenied           credentials missing, wrong, or not allowed this action
    │   ├── NoSuchBucket           the bucket does not exist
    │   ├── NotSupported           the store does not implement a request (bucket settings)
    │   ├── Throttled              the store kept answering "slow down" past the retry budget
    │   ├── ObjectNotFound         a key that is not in the store (a load failure when loading)
    │   ├── PreconditionFailed     a conditional write lost: the key exists, or changed since read
    │   │   └── Superseded         a member key taken once a later attempt is claimed (exit 1)
    │   └── NoConditionalWrites    the store ignores If-None-Match/If-Match; claims cannot be atomic
    ├── LoadError                  an object is present but fails verification (a member is invalid)
    │   ├── ChecksumMismatch       payload bytes differ from the recorded checksum
    │   ├── TruncatedObject        fewer bytes than recorded, or an empty object
    │   ├── CodecMismatch          written in another codec, or not an s43 object at all
    │   ├── UnsafePayload          an object array or pickle inside; never unpickled
    │   ├── WrongRun               the object's metadata names another run
    │   ├── WrongMember            the object's metadata names another member (a swapped key)
    │   ├── WrongAttempt           written by another attempt than the ledger recorded
    │   ├── SchemaMismatch         arrays (names, dtypes, shapes) the run did not declare
    │   └── NotInLedger            present, but this attempt's ledger does not list it
    ├── PredictorFailed            a predictor raised, or returned something other than arrays
    ├── GateFailed                 the cohort is incomplete or invalid (exit 1)
    └── ClusterError               Ray could not be started or reached (exit 3)
"""

from __future__ import annotations

from typing import ClassVar

EXIT_PASSED = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130  # the shell convention for SIGINT

# Error classes that say the store or the cluster failed, not the cohort: a failed gate whose
# members failed for one of these reasons exits 3, so the operator fixes the infrastructure
# (then resumes) instead of hunting for a missing member.
STORE_ERROR_CLASSES = frozenset({"unreachable", "auth", "no_such_bucket", "throttled", "store",
                                 "timeout", "circuit_open", "conflict",
                                 "no_conditional_writes"})
CLUSTER_ERROR_CLASSES = frozenset({"worker_died", "node_died", "unschedulable", "oom",
                                   "cancelled", "task_error", "cluster", "stalled"})
INFRA_ERROR_CLASSES = STORE_ERROR_CLASSES | CLUSTER_ERROR_CLASSES


class S43Error(Exception):
    """Base of every error s43_ray raises on purpose."""

    exit_code: ClassVar[int] = EXIT_BAD_INPUT
    error_class: ClassVar[str] = "error"


class InputError(S43Error):
    """Bad input or usage; nothing has been written."""

    exit_code = EXIT_BAD_INPUT
    error_class = "bad_input"


class InvalidRunId(InputError):
    """A run id that cannot be a key segment."""


class InvalidMember(InputError):
    """A member name that cannot be a key segment."""


class InvalidStoreUrl(InputError):
    """A store URL that is not ``s3://BUCKET[/PREFIX]``."""


class InvalidSetting(InputError):
    """A configuration field outside what it accepts. ``field`` names it as the config does,
    so the CLI can say where the value came from (a flag, or an environment variable)."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        super().__init__(f"{field.replace('_', ' ')} {value!r} is not valid; expected {expected}")
        self.field = field
        self.value = value
        self.expected = expected


class InvalidPredictor(InputError):
    """A predictor that is not an importable ``module:function``."""


class UnsafeArray(InputError):
    """An array the codecs refuse to write."""

    error_class = "unsafe_payload"


class SseKeyRequired(InputError):
    """The object is encrypted with a customer key (SSE-C) and the command has none."""

    error_class = "sse_key_required"


class StoreError(S43Error):
    """The store could not serve a request."""

    exit_code = EXIT_UNREACHABLE
    error_class = "store"


class NotSupported(StoreError):
    """The store does not implement a request (SeaweedFS: bucket encryption, some lifecycle
    actions): an answer, not an outage; the caller says what to do instead."""

    def __init__(self, where: str) -> None:
        super().__init__(f"{where}: the store does not implement this request")
        self.where = where  # the request: "GET LIFECYCLE s3://BUCKET at ENDPOINT"


class StoreUnreachable(StoreError):
    """Connection refused, name not resolved, or timed out after retries."""

    error_class = "unreachable"


class AccessDenied(StoreError):
    """Credentials missing, wrong, or not allowed the action."""

    error_class = "auth"


class NoSuchBucket(StoreError):
    """The bucket does not exist."""

    error_class = "no_such_bucket"


class Throttled(StoreError):
    """The store kept throttling past the retry budget."""

    error_class = "throttled"


class ObjectNotFound(StoreError):
    """The key is not in the store."""

    error_class = "not_found"


class PreconditionFailed(StoreError):
    """A conditional PUT (``If-None-Match: *`` or ``If-Match``) was refused: someone else wrote."""

    error_class = "conflict"


class Superseded(PreconditionFailed):
    """A member write found its key taken after a later attempt of the run was claimed: this
    attempt is stale (another driver re-ran the run) and writes nothing. Not the store's
    fault: the attempt's gate fails (exit 1), as a superseded verdict does."""

    exit_code = EXIT_GATE_FAILED
    error_class = "superseded"


class NoConditionalWrites(StoreError):
    """The store accepted a conditional PUT it should have refused: it ignores the condition."""

    error_class = "no_conditional_writes"


class LoadError(S43Error):
    """An object is present but fails verification."""

    exit_code = EXIT_GATE_FAILED
    error_class = "invalid"


class ChecksumMismatch(LoadError):
    """The payload's checksum differs from the recorded one."""

    error_class = "checksum"


class TruncatedObject(LoadError):
    """The object is shorter than recorded, or empty."""

    error_class = "truncated"


class CodecMismatch(LoadError):
    """The object is in another codec, or not an s43 object."""

    error_class = "codec"


class UnsafePayload(LoadError):
    """The object holds a pickle or object array; it was not unpickled."""

    error_class = "unsafe_payload"


class WrongRun(LoadError):
    """The object's metadata names another run."""

    error_class = "wrong_run"


class WrongMember(LoadError):
    """The object's metadata names another member: copied or swapped onto this key."""

    error_class = "wrong_member"


class WrongAttempt(LoadError):
    """The object was written by another attempt of the run than its ledger recorded."""

    error_class = "wrong_attempt"


class SchemaMismatch(LoadError):
    """The object's arrays (names, dtypes, shapes) differ from what the run declared."""

    error_class = "schema"


class NotInLedger(LoadError):
    """An object is present, but the attempt's ledger does not list it (its task failed)."""

    error_class = "not_in_ledger"


class PredictorFailed(S43Error):
    """A member's predictor raised, or returned something other than named arrays."""

    exit_code = EXIT_GATE_FAILED
    error_class = "predictor"


class GateFailed(S43Error):
    """The cohort is incomplete or invalid."""

    exit_code = EXIT_GATE_FAILED
    error_class = "gate_failed"


class ClusterError(S43Error):
    """Ray could not be started or reached."""

    exit_code = EXIT_UNREACHABLE
    error_class = "cluster"
