"""The verified cohort as a ``ray.data.Dataset``: a Ray Data datasource whose read tasks each
read a share of the members, verify each against the passed verdict, and yield its rows.

Imported only by :meth:`Run.read_dataset <s43_ray.api.run.Run.read_dataset>`: it needs Ray Data
(the ``s43_ray[data]`` extra).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING

import pyarrow as pa
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from .reading import VerifiedCohort, member_table, read_member

if TYPE_CHECKING:
    from .run import Run


def _read(run: Run, cohort: VerifiedCohort, members: Sequence[str]) -> Iterator[pa.Table]:
    client = run.store.client()  # this worker's, reused for its share of the members
    for member in members:
        yield member_table(member, read_member(run, cohort, member, client))


class CohortDatasource(Datasource):
    """Reads a run's members lazily, in parallel, each verified as it is read."""

    def __init__(self, run: Run, cohort: VerifiedCohort) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.run = run
        self.cohort = cohort

    def get_name(self) -> str:
        return f"S43Cohort({self.run.run_id})"

    def estimate_inmemory_data_size(self) -> int | None:
        return self.cohort.bytes_total

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: object = None) -> list[ReadTask]:
        members = list(self.run.members)
        shares = max(1, min(parallelism, len(members)))
        tasks = []
        for i in range(shares):
            share = members[i::shares]
            size = sum(self.cohort.expect[m].bytes for m in share)
            tasks.append(ReadTask(partial(_read, self.run, self.cohort, share),
                                  BlockMetadata(num_rows=None, size_bytes=size,
                                                exec_stats=None, input_files=None),
                                  per_task_row_limit=per_task_row_limit))
        return tasks


def cohort_dataset(run: Run, cohort: VerifiedCohort, parallelism: int) -> ray.data.Dataset:
    dataset: ray.data.Dataset = ray.data.read_datasource(
        CohortDatasource(run, cohort), override_num_blocks=parallelism if parallelism > 0 else None)
    return dataset
