"""Command line: ``python -m pyacl_qscatter {demo,info,bench,selftest,stress}``."""

from __future__ import annotations

import importlib
import os
import sys
from typing import TextIO

COMMANDS = {
    "demo": "run the seed's example on the active backend and say which",
    "info": "version, backends, where CANN was found (or everything tried)",
    "bench": "measure throughput and host overhead, side by side in one run",
    "selftest": "every conformance case on the device against the reference (run this first on hardware); "
                "--report: answer the open hardware questions by experiment, for pasting into an issue",
    "stress": "fuzzing, injected faults, threads and a long run: results, leaks and memory growth",
}


def usage(out: TextIO | None = None) -> None:
    """Print the usage line and every command with what it does (to ``out``, default stdout).

    >>> usage()  # doctest: +ELLIPSIS
    usage: python -m pyacl_qscatter COMMAND [options]   (COMMAND --help for its options)
    <BLANKLINE>
    commands:
      demo       run the seed's example ...
    """
    stream = sys.stdout if out is None else out
    print("usage: python -m pyacl_qscatter COMMAND [options]   (COMMAND --help for its options)\n\ncommands:",
          file=stream)
    for name, text in COMMANDS.items():
        print(f"  {name:10} {text}", file=stream)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to ``pyacl_qscatter._cli.<command>.main(rest)``.

    A reader that stops early (``| head``) ends the command quietly instead of with a ``BrokenPipeError``.

    >>> main(["--help"])  # doctest: +ELLIPSIS
    usage: python -m pyacl_qscatter COMMAND [options]...
    0
    """
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        usage()
        return 0 if args else 2
    if args[0] not in COMMANDS:
        print(f"python -m pyacl_qscatter: unknown command {args[0]!r}", file=sys.stderr)
        usage(sys.stderr)
        return 2
    module = importlib.import_module(f"pyacl_qscatter._cli.{args[0]}")
    try:
        result: int = module.main(args[1:])
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away: point stdout at /dev/null so the interpreter's final flush cannot fail again
        # (the recipe in Python's signal module documentation), and exit as a closed pipe does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
