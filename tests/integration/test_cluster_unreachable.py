"""Exit 3 when the Ray cluster named by ``--address`` cannot be reached (in a subprocess: the
in-process ``cli`` fixture reuses the session's Ray and would never try the address)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import keys_under

from s43_ray.config import StoreConfig
from s43_ray.stores.local_s3 import free_ports
from s43_ray.stores.s3 import S3Store

# A dead address should fail within seconds; a hung ray.init is the failure being tested.
UNREACHABLE_DEADLINE_S = 25


@pytest.mark.timeout(UNREACHABLE_DEADLINE_S + 60)
def test_unreachable_ray_address_exits_3(store_args: list[str], store: S3Store,
                                         store_cfg: StoreConfig, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    exe = Path(sys.executable).parent / "s43-ray"
    try:
        proc = subprocess.run([str(exe), "run", "--run-id", "no-ray", "--cohort-size", "1",
                               "--rows", "100", "--address", address, "--json", *store_args],
                              capture_output=True, text=True, cwd=tmp_path,
                              stdin=subprocess.DEVNULL, timeout=UNREACHABLE_DEADLINE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"s43-ray run --address {address} still running after "
                    f"{UNREACHABLE_DEADLINE_S}s; expected exit 3")

    assert proc.returncode == 3, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("s43-ray: error:")]
    assert len(errors) == 1 and address in errors[0]
    assert "Traceback" not in proc.stderr
    assert not [k for k in keys_under(store, store_cfg.prefix + "/") if "/m0" in k]
