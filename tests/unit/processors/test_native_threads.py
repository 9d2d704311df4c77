"""A worker computes on its own thread: numpy's OpenBLAS takes no other core (processors/startup.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Float products large enough for OpenBLAS to share them among threads, with Python work between them as in a
# worker; prints the CPU seconds of the main thread and of every other thread of the process.
_PRODUCTS = """
import sys, time
import numpy as np
if sys.argv[1] == "worker":
    from llmpulse.processors.startup import one_native_thread
    one_native_thread()
a, b = np.ones((2000, 300), dtype=np.float32), np.ones((300, 300), dtype=np.float32)
a @ b  # threads started and warm before the clock
process, thread = time.process_time(), time.thread_time()
for _ in range(150):
    a @ b
    sum(range(20_000))
main = time.thread_time() - thread
print(main, time.process_time() - process - main)
"""


def _cpu_seconds(mode: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", _PRODUCTS, mode], check=True, capture_output=True, text=True,
                         env={**os.environ, "OPENBLAS_NUM_THREADS": "", "OMP_NUM_THREADS": ""}).stdout
    main, others = map(float, out.split())
    return main, others


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS starts no other thread on one core")
def test_after_the_worker_starts_numpy_products_take_no_other_core() -> None:
    main, others = _cpu_seconds("plain")
    assert others > 0.3 * main  # the same products in a plain process: OpenBLAS threads on the other cores
    main, others = _cpu_seconds("worker")
    assert others < 0.1 * main
