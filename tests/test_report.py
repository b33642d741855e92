"""``selftest --report`` against the emulator: one entry per open hardware question, readable text, and a
difference in the device's behaviour shown as exactly one disagreement (child processes, as a user runs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

QUESTIONS = ["nan_inf", "ties_bf16", "ties_fp16", "division_fp16", "division_bf16", "indices_2d", "rank_above_3",
             "axis_not_minus_2", "int64_indices", "start_s_minus_u", "non_contiguous", "repeatable_executor",
             "graph_capture", "timing", "pageable_vs_pinned"]

pytestmark = pytest.mark.emulator


def report(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, ASCEND_HOME_PATH=str(root), ASCEND_OPP_PATH=str(root / "opp"), **env)
    return subprocess.run([sys.executable, "-m", "pyacl_qscatter", "selftest", "--report", *args],
                          capture_output=True, text=True, env=full, timeout=300)


def test_json_has_one_entry_per_question_and_says_emulator(emulator_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = report(emulator_root, "--json", "--out", str(out))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    data: dict[str, Any] = json.loads(out.read_text())
    assert [q["id"] for q in data["questions"]] == QUESTIONS
    for q in data["questions"]:
        assert set(q) == {"id", "question", "predicted", "observed", "agrees"}
        assert q["agrees"] in (True, False, None) and q["predicted"] and q["observed"]
    assert [q["id"] for q in data["questions"] if q["agrees"] is False] == []
    toolkit = data["toolkit"]
    assert toolkit["emulator"] is True and toolkit["soc"] == "Ascend910B1" and toolkit["rules"] == "A2"
    assert toolkit["libraries"]["rt"].startswith(str(emulator_root))
    assert "0 mismatches" in data["conformance"]


def test_text_reads_on_its_own(emulator_root: Path) -> None:
    proc = report(emulator_root)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith("pyacl_qscatter hardware report")
    assert "emulator:    YES" in text and "SoC:         Ascend910B1" in text
    for qid in QUESTIONS:
        assert f"[{qid}] " in text
    assert text.count("    predicted: ") == text.count("    observed:  ") == len(QUESTIONS)


def test_a_nan_difference_is_exactly_one_disagreement(emulator_root: Path) -> None:
    proc = report(emulator_root, "--json", CANN_EMU_NAN_VALUE="127")
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert [q["id"] for q in data["questions"] if q["agrees"] is False] == ["nan_inf"]
    nan = data["questions"][0]
    assert nan["predicted"].startswith("result [0, 127, -128, 0,") and nan["observed"].startswith("result [127,")


def test_without_a_device_it_says_so() -> None:
    env = dict(os.environ, PYACL_QSCATTER_CANN_HOME="/nonexistent", ASCEND_HOME_PATH="/nonexistent")
    proc = subprocess.run([sys.executable, "-m", "pyacl_qscatter", "selftest", "--report"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "selftest --report needs a device" in proc.stderr
