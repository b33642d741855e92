"""``bench``'s import figure: the cost of ``import pyacl_qscatter`` as a ratio, never an absolute time.

Both imports are timed in one fresh interpreter, the dependencies first (numpy, ml_dtypes, cffi), then the
package on top of them, so a loaded machine slows both and the ratio stays meaningful.
"""

from __future__ import annotations

import subprocess
import sys

_CODE = ("import time; t0 = time.perf_counter(); import numpy, ml_dtypes, cffi; t1 = time.perf_counter(); "
         "import pyacl_qscatter; t2 = time.perf_counter(); print(t1 - t0, t2 - t1)")


def import_figures(repeat: int = 3) -> dict[str, float]:
    """Seconds to import the dependencies and then the package (best of ``repeat`` fresh interpreters), and
    ``import_ratio``: the package's own import time over its dependencies'.

    >>> figures = import_figures(1)
    >>> sorted(figures), figures["import_ratio"] > 0
    (['import_deps_ms', 'import_package_ms', 'import_ratio'], True)
    """
    deps = own = float("inf")
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", _CODE], capture_output=True, text=True, check=True)
        d, o = (float(x) for x in out.stdout.split())
        deps, own = min(deps, d), min(own, o)
    return {"import_deps_ms": deps * 1e3, "import_package_ms": own * 1e3, "import_ratio": own / deps}
