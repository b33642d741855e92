"""Subcommands of ``python -m pyacl_qscatter``; each module has ``main(argv) -> int``."""
