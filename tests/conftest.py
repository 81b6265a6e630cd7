"""Session fixtures: a real SeaweedFS S3 server and a real local Ray cluster, both on loopback.

Credentials are fixed, fake and test-only (dagster's fake-credentials pattern): the session puts
them in the environment *before* Ray starts, so Ray workers and CLI subprocesses find them
through the standard AWS credential chain, exactly as pods do in production.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import (
    ACCESS_KEY,
    RAY_NUM_CPUS,
    RAY_OBJECT_STORE_BYTES,
    SECRET_KEY,
    TEST_BUCKET,
    TEST_IDENTITIES,
    CliResult,
    parse_events,
)

from s43_ray.cli.main import main
from s43_ray.config import StoreConfig
from s43_ray.stores.local_s3 import LocalS3
from s43_ray.stores.s3 import S3Store
from s43_ray.stores.s3_admin import S3BucketAdmin


@pytest.fixture(scope="session")
def aws_env() -> Iterator[dict[str, str]]:
    """Fake, test-only credentials in the environment for the whole session."""
    mp = pytest.MonkeyPatch()
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                "S43_STORE", "RAY_ADDRESS"):
        mp.delenv(var, raising=False)
    values = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
              "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
              "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    for key, value in values.items():
        mp.setenv(key, value)
    yield values
    mp.undo()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory, aws_env: dict[str, str]
              ) -> Iterator[LocalS3]:
    """A real SeaweedFS S3 server on 127.0.0.1, stopped by its PID at the end."""
    server = LocalS3(tmp_path_factory.mktemp("seaweedfs"), bucket=TEST_BUCKET,
                     s3_config=TEST_IDENTITIES)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster(aws_env: dict[str, str]) -> Iterator[None]:
    """A real local Ray cluster for in-process runs; shut down at the end of the session."""
    import ray

    ray.init(num_cpus=RAY_NUM_CPUS, object_store_memory=RAY_OBJECT_STORE_BYTES,
             include_dashboard=False, log_to_driver=True, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A prefix of this test's own, so tests never see each other's objects."""
    name = request.node.name.replace("[", "-").replace("]", "").replace("/", "-")[:40]
    return f"t/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store_cfg(s3_server: LocalS3, prefix: str) -> StoreConfig:
    """Config for the test server using the environment's credentials (the standard chain)."""
    return StoreConfig(bucket=TEST_BUCKET, prefix=prefix, endpoint_url=s3_server.endpoint_url,
                       region="us-east-1", max_attempts=2)


@pytest.fixture
def store(store_cfg: StoreConfig) -> S3Store:
    return S3Store(store_cfg)


@pytest.fixture
def other_bucket(s3_server: LocalS3) -> str:
    name = f"s43-other-{uuid.uuid4().hex[:6]}"
    S3BucketAdmin(s3_server.store_config()).create_bucket(name)
    return name


@pytest.fixture
def cli(ray_cluster: None, s3_server: LocalS3) -> Any:
    """Run ``s43-ray`` in-process on the session's Ray cluster; returns a :class:`CliResult`."""

    def run(*argv: str) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), stdout=out, stderr=err)
        return CliResult(code, out.getvalue(), err.getvalue(), parse_events(err.getvalue()))

    return run


@pytest.fixture
def store_args(store_cfg: StoreConfig) -> list[str]:
    """``--store`` and ``--endpoint-url`` flags for this test's prefix."""
    return ["--store", store_cfg.url, "--endpoint-url", str(store_cfg.endpoint_url),
            "--max-attempts", "2"]
