"""Transport benchmark: ``python benchmarks/bench_transport.py [--quick] --out DIR``.

A thin wrapper: the code is :mod:`s43_ray.bench` (also ``s43-ray bench``); ``--help`` lists
the flags.
"""

from __future__ import annotations

import sys

from s43_ray.bench import main

if __name__ == "__main__":
    sys.exit(main())
