"""Member writes that a stale attempt cannot undo: create-only, replace-only-what-was-seen.

A request the client gave up on is not necessarily dead. A worker cut off from the store
mid-PUT keeps the request in its kernel's send queue, even after its process is killed, and
delivers it when the link comes back, minutes later; a thread abandoned by an open circuit does
the same. With plain overwriting PUTs, such a late write of attempt 1 lands over the object
``--resume`` (attempt 2) wrote a moment before, and the gate rightly fails the run
(``wrong_attempt``): a correct cohort refused because of a ghost.

So a member is written with ``If-None-Match: *``. When something is already under its key:

- an object of this run and member from a *later* attempt: this write is stale, and is refused
  (:class:`~s43_ray.errors.Superseded`, ``superseded``, nothing written);
- the very object this write would leave (this attempt, the same checksum): an earlier try of
  this write landed and its answer was lost, or Ray re-ran the task; done, nothing rewritten;
- anything else (an earlier attempt's, a damaged or foreign object, another execution of this
  attempt with other bytes): replaced with ``If-Match`` on the ETag just read, so only what
  was seen is replaced.

Every write of every attempt is conditional, so a late write can land only on an empty key, and
the attempt that finds its object there replaces it. A store that ignores conditions (refused at
the run's claim) degrades to plain overwriting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from .binding import META_MEMBER, META_RUN, object_attempt
from .codec import META_CHECKSUM
from .errors import ObjectNotFound, PreconditionFailed, Superseded
from .stores.base import Heads, Writes

# Conditional writes before giving up: each round means another writer changed the key between
# our HEAD and our PUT, which only a second live writer of the same member can do.
FENCE_ROUNDS = 4


class MemberStore(Writes, Heads, Protocol):
    """What :func:`put_member` needs of a store."""


def put_member(store: MemberStore, key: str, body: bytes | memoryview, *,
               metadata: Mapping[str, str], s3_checksum: str | None, run_id: str, member: str,
               attempt: int, checksum: str) -> None:
    """Write a member object so that no other attempt's late write can replace it afterwards
    (see the module's text). Raises :class:`Superseded` when a later attempt already wrote it,
    :class:`PreconditionFailed` (``conflict``) when the key kept changing under us."""
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
        meta = found.metadata
        ours = meta.get(META_RUN) == run_id and meta.get(META_MEMBER) == member
        their_attempt = object_attempt(meta) if ours else None
        if their_attempt is not None and their_attempt > attempt:
            raise Superseded(
                f"member {member!r} of run {run_id!r}: {key} was already written by attempt "
                f"{their_attempt}; this write of attempt {attempt} is stale, nothing written")
        if their_attempt == attempt and meta.get(META_CHECKSUM) == checksum:
            return  # this write, landed earlier (an answer lost, or the task re-run)
        if not found.etag:
            raise PreconditionFailed(f"{key}: an object is there and the store gave no ETag to "
                                     "replace it conditionally; nothing written")
        if_none_match, if_match = False, found.etag
    raise PreconditionFailed(f"{key}: changed under every one of {FENCE_ROUNDS} conditional "
                             f"writes of member {member!r} (another live writer?); the last "
                             "one was refused")
