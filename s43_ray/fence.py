"""Member writes that a stale attempt cannot undo: create-only, replace-only-what-was-seen.

A request the client gave up on is not necessarily dead. A worker cut off from the store
mid-PUT keeps the request in its kernel's send queue, even after its process is killed, and
delivers it when the link comes back, minutes later; a thread abandoned by an open circuit does
the same. With plain overwriting PUTs, such a late write of attempt 1 lands over the object
``--resume`` (attempt 2) wrote a moment before, and the gate rightly fails the run
(``wrong_attempt``): a correct cohort refused because of a ghost.

So a member is written with ``If-None-Match: *``. When something is already under its key, the
writer HEADs it and, unless a later attempt of the run has been claimed
(``_attempts/<N+1>.json`` exists: this attempt is stale, :class:`~s43_ray.errors.Superseded`,
``superseded``, nothing written), replaces it with ``If-Match`` on the ETag just read: an
earlier attempt's object, a damaged or foreign one, or this attempt's own (an answer lost, or
Ray re-running the task; rewriting it is harmless).

What this guarantees: a late *create* never lands over an object, and a stale attempt finds
out before it replaces one. What it cannot: an ``If-Match`` already sent, then held up (a cut)
past the moment a later attempt was claimed, still lands when the ETag it names is the current
one: the object that later attempt reused, or one it rewrote with byte-identical content (an S3
ETag is the body's MD5 and does not cover metadata). The gate then fails the member
``wrong_attempt`` (closed, never a false pass) and ``--resume`` repairs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from .binding import META_ATTEMPT
from .errors import ObjectNotFound, PreconditionFailed, Superseded
from .keys import RunLayout
from .stores.base import Heads, Writes

# Conditional writes before giving up: each round means another writer changed the key between
# our HEAD and our PUT, which only a second live writer of the same member can do.
FENCE_ROUNDS = 4


class MemberStore(Writes, Heads, Protocol):
    """What :func:`put_member` needs of a store."""


def put_member(store: MemberStore, layout: RunLayout, member: str, key: str,
               body: bytes | memoryview, *, metadata: Mapping[str, str],
               s3_checksum: str | None, attempt: int) -> None:
    """Write a member object of ``attempt`` so that a late create cannot replace it and a stale
    attempt does not (see the module's text). Raises :class:`Superseded` when a later attempt
    has been claimed and the key holds an object, :class:`PreconditionFailed` (``conflict``)
    when the key kept changing under us."""
    if_none_match, if_match = True, None
    for _ in range(FENCE_ROUNDS):
        try:
            store.put(key, body, metadata=metadata, s3_checksum=s3_checksum,
                      if_none_match=if_none_match, if_match=if_match)
            return
        except PreconditionFailed:
            pass
        try:
            found = store.head(key)
        except ObjectNotFound:  # deleted since: create it again
            if_none_match, if_match = True, None
            continue
        if _later_attempt_claimed(store, layout, attempt):
            their = found.metadata.get(META_ATTEMPT, "none")
            raise Superseded(
                f"member {member!r} of run {layout.run_id!r}: attempt {attempt + 1} of the run "
                f"has been claimed and {key} holds an object (of attempt {their}); this write "
                f"of attempt {attempt} is stale, nothing written")
        if not found.etag:
            raise PreconditionFailed(f"{key}: an object is there and the store gave no ETag to "
                                     "replace it conditionally; nothing written")
        if_none_match, if_match = False, found.etag
    raise PreconditionFailed(f"{key}: changed under every one of {FENCE_ROUNDS} conditional "
                             f"writes of member {member!r} (another live writer?); the last "
                             "one was refused")


def _later_attempt_claimed(store: MemberStore, layout: RunLayout, attempt: int) -> bool:
    """Whether attempt ``attempt + 1`` of the run has been claimed (numbers are claimed in
    order, so any later attempt claims this one first)."""
    try:
        store.head(layout.attempt_key(attempt + 1))
    except ObjectNotFound:
        return False
    return True
