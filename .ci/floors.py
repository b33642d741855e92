"""Print pip constraints pinning each runtime dependency of pyproject.toml to its declared floor for the running
Python (``numpy==1.23.3``, ...), so that CI tests the oldest versions the package says it supports."""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib
from pip._vendor.packaging.requirements import Requirement  # pip is in every venv; packaging may not be

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
for line in project["dependencies"]:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate():
        continue
    floors = [s.version for s in req.specifier if s.operator == ">="]
    if len(floors) != 1:
        sys.exit(f"{line}: a dependency needs exactly one '>=' floor, got {req.specifier}")
    print(f"{req.name}=={floors[0]}")
