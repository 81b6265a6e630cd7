"""s43_ray as a library, end to end: persist from your own Ray tasks, gate, read back verified.

    python examples/library_quickstart.py                       # embedded S3 server, local Ray
    python examples/library_quickstart.py --store s3://bucket/s43-predictions \\
        --endpoint-url https://s3.fr-par.scw.cloud               # a real bucket (AWS credentials
                                                                # from the usual chain)

With RAY_ADDRESS set it joins that cluster; otherwise it starts a small local one. It prints
what each step did and, last, one JSON line (what the test suite checks). Exit 0 when every
gate passed, 1 otherwise. docs/api.md walks through the same code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import zlib
from collections.abc import Iterator

import numpy as np
import ray

import s43_ray


@ray.remote
def pod(run: s43_ray.Run, member: str) -> s43_ray.PredictionRef:
    """One member's "pod": compute its predictions and persist them; only the small reference
    goes back to the driver."""
    rng = np.random.default_rng(zlib.crc32(member.encode()))
    predictions = rng.random(1_000, dtype=np.float32)
    return run.persist(member, {
        "predictions": predictions,
        "label": (predictions >= 0.5).astype(np.int8),
        "embedding": rng.standard_normal((1_000, 4), dtype=np.float32),  # N-D is fine
    })


def predict(run_id: str, member: str, rows: int) -> dict[str, np.ndarray]:
    """A predictor for s43_ray.run_cohort (what `s43-ray run --predictor` takes as a path)."""
    rng = np.random.default_rng(zlib.crc32(f"{run_id}/{member}".encode()))
    return {"predictions": rng.random(rows, dtype=np.float32)}


@contextlib.contextmanager
def the_store(url: str | None, endpoint_url: str | None) -> Iterator[s43_ray.Store]:
    if url is None:
        with s43_ray.local_store() as store:  # starts SeaweedFS on 127.0.0.1, stops it after
            yield store
    else:
        yield s43_ray.open_store(url, endpoint_url=endpoint_url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="s3://BUCKET/PREFIX or file:///DIR (default: the "
                                        "embedded local server)")
    parser.add_argument("--endpoint-url", help="the S3 endpoint (default: AWS, or "
                                               "AWS_ENDPOINT_URL_S3)")
    parser.add_argument("--members", type=int, default=8, help="cohort size (default 8)")
    parser.add_argument("--run-id", help="run id (default: a fresh one)")
    args = parser.parse_args(argv)

    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        ray.init(num_cpus=2, object_store_memory=100 * 1024**2, include_dashboard=False)
    try:
        with the_store(args.store, args.endpoint_url) as store:
            # 1. Claim the run (atomically: a second driver with another cohort is refused).
            members = [f"m{i:05d}" for i in range(args.members)]
            run = store.start_run(args.run_id, members=members, codec="arrow")
            print(f"started {run!r}")

            # 2. Fan out: the Run pickles in a few hundred bytes, no client inside.
            refs = ray.get([pod.remote(run, m) for m in run])

            # 3. Gate: what is really in the store, every checksum verified, verdict kept.
            verdict = run.gate(refs)
            print(f"gate: {verdict.status} {verdict.cohort_count}/{verdict.expected}")
            if not verdict.passed:
                print(verdict.reason, file=sys.stderr)
                return 1

            # 4. Read back, verified against the passed verdict.
            arrays = run.load(members[3])
            table = run.read_table()
            print(f"load({members[3]}): {sorted(arrays)}; read_table: {table.num_rows} rows, "
                  f"columns {table.column_names}")
            dataset_rows = None
            with contextlib.suppress(s43_ray.InputError):  # without the s43_ray[data] extra
                dataset_rows = run.read_dataset().count()
                print(f"read_dataset: {dataset_rows} rows")

            # 5. The CLI's whole job as one call, with a predictor function.
            summary = s43_ray.run_cohort(store, None, members, predictor=predict, rows=100)
            print(summary.human())

            print(json.dumps({"run_id": run.run_id, "passed": verdict.passed,
                              "table_rows": table.num_rows, "dataset_rows": dataset_rows,
                              "run_cohort": {"run_id": summary.run_id,
                                             "passed": summary.passed}}))
            return 0 if summary.passed else 1
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
