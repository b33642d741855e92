"""docs/embedding.md: every ``python`` block runs as written against the emulator (``py`` blocks show a
foreign runtime's side and are not run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyacl_qscatter.runtime import Device

pytestmark = pytest.mark.emulator
DOC = Path(__file__).resolve().parents[1] / "docs" / "embedding.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_the_page_has_runnable_blocks() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_block_runs(dev: Device, block: str) -> None:
    exec(compile(block, str(DOC), "exec"), {"__name__": "embedding_doc"})
