"""Command line: ``python -m pyacl_qscatter {demo,info,bench,selftest,stress}``."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "demo": "run the seed's example on the active backend and say which",
    "info": "version, backends, where CANN was found (or everything tried)",
    "bench": "measure throughput and host overhead, side by side in one run",
    "selftest": "every conformance case on the device against the reference (run this first on hardware)",
    "stress": "fuzzing, injected faults, threads and a long run: results, leaks and memory growth",
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to ``pyacl_qscatter._cli.<command>.main(rest)``.

    >>> main(["--help"])  # doctest: +ELLIPSIS
    usage: python -m pyacl_qscatter COMMAND [options]
    ...
    0
    """
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        print("usage: python -m pyacl_qscatter COMMAND [options]\n\ncommands:")
        for name, text in COMMANDS.items():
            print(f"  {name:10} {text}")
        return 0 if args and args[0] in ("-h", "--help") else 2
    module = importlib.import_module(f"pyacl_qscatter._cli.{args[0]}")
    result: int = module.main(args[1:])
    return result


if __name__ == "__main__":
    sys.exit(main())
