"""Transport benchmark: ``python benchmarks/bench_transport.py [--quick] --out DIR``.

The same command as ``s43-ray bench`` (the code is :mod:`s43_ray.bench`); ``--help`` lists the
flags.
"""

from __future__ import annotations

import sys

from s43_ray.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
