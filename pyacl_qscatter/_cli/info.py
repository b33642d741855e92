"""``python -m pyacl_qscatter info``: version, backends, where CANN was found (or everything tried).

Exit status 0 whether or not CANN is present; 2 on a bad option.

Example::

    main(["--no-device"])
    # -> 0
"""

from __future__ import annotations

import argparse
import json

from .._diagnostics import collect, format_report

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Print the report; ``--json`` for machine-readable output, ``--no-device`` to skip aclInit.

    Example::

        main(["--json", "--no-device"])
        # -> 0
    """
    parser = argparse.ArgumentParser(
        prog="python -m pyacl_qscatter info",
        description="Show the package version, the backends, where CANN was found (or every place tried), "
        "its version, SoC, device count, op entry points and the ASCEND_* settings.",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-device", action="store_true",
                        help="do not call aclInit to ask for the versions, SoC and device count")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on bad options (2)
        return int(exc.code or 0)
    report = collect(query_device=not args.no_device)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        print(format_report(report))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
