"""Graph replay against the emulator's ACL graph: a captured step replays with one C call and stays exact,
inputs change through the same device buffers, what a replay could not repeat is refused inside the
capture, a graph keeps what it uses alive until it is closed, and nothing leaks (live_graphs)."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from emulator.build import build
from emulator.emu import Emu
from reliability import settle, subprocess_env

import pyacl_qscatter as qs
from pyacl_qscatter import _calls
from pyacl_qscatter.errors import InvalidValueError
from pyacl_qscatter.memory import DeviceArray
from pyacl_qscatter.runtime import Device, Stream

pytestmark = pytest.mark.emulator
BF16 = ml_dtypes.bfloat16
LAYERS = 4
SCALES = np.full(64, 0.1, BF16)


@pytest.fixture
def graph_dev(dev: Device) -> Device:
    if not _calls.bound().caps.graph:  # type: ignore[union-attr]
        pytest.skip("this emulator build exports no ACL graph (built with CANN_EMU_NO_GRAPH=1 or before capture)")
    return dev


class Step:
    """A small decode step: LAYERS calls on views of one cache, one index buffer, per-layer update rows."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.host = np.zeros((LAYERS, 4, 32, 64), np.int8)
        self.cache = DeviceArray.from_numpy(self.host, stream=stream)
        self.idx = DeviceArray.from_numpy(np.array([0, 3, 7, 9], np.int32), stream=stream)
        self.upd = DeviceArray.empty((LAYERS, 4, 1, 64), BF16, stream=stream)
        self.sc = DeviceArray.from_numpy(SCALES, stream=stream)

    def feed(self, seed: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        rng = np.random.default_rng(seed)
        idx = rng.permutation(28)[:4].astype(np.int32)
        upd = rng.uniform(-3, 3, (LAYERS, 4, 1, 64)).astype(BF16)
        self.upd.copy_from(upd, stream=self.stream)
        return idx, upd

    def run(self, **kwargs: Any) -> None:
        for layer in range(LAYERS):  # views made afresh, as a decode loop does
            qs.quant_scatter_(self.cache[layer], self.idx, self.upd[layer], self.sc, stream=self.stream,
                              check_indices=False, **kwargs)

    def expect(self, idx: np.ndarray[Any, Any], upd: np.ndarray[Any, Any]) -> None:
        for layer in range(LAYERS):
            qs.quant_scatter_(self.host[layer], idx, upd[layer], SCALES, backend="cpu")

    def capture(self) -> tuple[qs.Graph, np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Feed seed 0 (indices too), run once (preparing every call) and mirror it on the host, then capture
        one more run; return the graph and what was fed."""
        idx, upd = self.feed(0)
        self.idx.copy_from(idx, stream=self.stream)
        self.run()
        self.expect(idx, upd)
        with qs.Graph(self.stream) as g:
            self.run()
        return g, idx, upd

    def close(self) -> None:
        for arr in (self.cache, self.idx, self.upd, self.sc):
            arr.close()


def test_a_captured_step_replays_with_one_call_and_stays_exact(graph_dev: Device, emu: Emu) -> None:
    start = settle(emu)
    graphs = emu.stat("live_graphs")
    with Stream() as stream:
        step = Step(stream)
        g, idx, upd = step.capture()
        assert len(g.calls) == LAYERS and emu.stat("live_graphs") == graphs + 1
        emu.reset()
        for seed in range(1, 6):
            idx, upd = step.feed(seed)
            g.write_indices(0, idx)  # every captured call reads this one index buffer
            g.replay()
            step.expect(idx, upd)
        assert emu.calls("aclmdlRIExecuteAsync") == 5 and emu.stat("graph_launches") == 5
        assert emu.calls("aclnnInplaceQuantScatter") == 0  # the recorded kernels ran, no new launch
        assert emu.calls("aclrtMalloc") == 0
        np.testing.assert_array_equal(step.cache.to_numpy(stream=stream), step.host)
        assert emu.stat("errors_detected") == 0
        g.close()
        assert g.closed and emu.stat("live_graphs") == graphs
        with pytest.raises(qs.GraphCaptureError, match="closed"):
            g.replay()
        step.close()
    assert settle(emu) == start


def test_what_a_replay_could_not_repeat_is_refused_inside_the_capture(graph_dev: Device, emu: Emu) -> None:
    graphs = emu.stat("live_graphs")
    with Stream() as stream:
        step = Step(stream)
        step.feed(0)
        step.run()
        host_idx = np.array([1, 2, 3, 4], np.int32)
        qs.quant_scatter_(step.cache[0], host_idx, step.upd[0], step.sc, stream=stream)  # prepared, host indices
        refusals = {
            "not prepared": lambda: qs.quant_scatter_(step.cache[0][:, 1:], step.idx, step.upd[0], step.sc,
                                                      stream=stream, check_indices=False),
            "host array": lambda: qs.quant_scatter_(step.cache[0], host_idx, step.upd[0], step.sc, stream=stream),
            "check_indices": lambda: qs.quant_scatter_(step.cache[0], step.idx, step.upd[0], step.sc, stream=stream),
            "allocates": lambda: qs.quant_scatter(step.cache[0], step.idx, step.upd[0], step.sc, stream=stream,
                                                  check_indices=False),
        }
        for why, call in refusals.items():
            with pytest.raises(qs.GraphCaptureError, match=why), qs.Graph(stream) as g:
                call()
            assert g.closed
        assert emu.stat("live_graphs") == graphs
        step.run()  # the stream works normally after a failed capture
        stream.synchronize()
        assert emu.stat("errors_detected") == 0
        step.close()


def test_a_graph_keeps_what_it_uses_until_closed(graph_dev: Device, emu: Emu) -> None:
    start = settle(emu)
    graphs = emu.stat("live_graphs")
    with Stream() as stream:
        step = Step(stream)
        g, idx, upd = step.capture()
        cache, upd_buf, host = step.cache, step.upd, step.host
        del step  # the user drops the index and scale arrays: the graph still uses them
        gc.collect()
        upd = np.random.default_rng(1).uniform(-3, 3, (LAYERS, 4, 1, 64)).astype(BF16)
        upd_buf.copy_from(upd, stream=stream)
        g.replay()
        for layer in range(LAYERS):
            qs.quant_scatter_(host[layer], idx, upd[layer], SCALES, backend="cpu")
        np.testing.assert_array_equal(cache.to_numpy(stream=stream), host)
        assert emu.stat("errors_detected") == 0
        upd_buf.close()  # closing an array a graph uses closes the graph first
        assert g.closed and emu.stat("live_graphs") == graphs
        cache.close()
        del g
    assert settle(emu) == start


def test_closing_the_stream_or_dropping_the_graph_releases_it(graph_dev: Device, emu: Emu) -> None:
    start = settle(emu)
    graphs = emu.stat("live_graphs")
    stream = Stream()
    step = Step(stream)
    g, _, _ = step.capture()
    stream.close()
    assert g.closed and emu.stat("live_graphs") == graphs
    step.close()
    with Stream() as other:
        step = Step(other)
        dropped, _, _ = step.capture()
        dropped.replay()
        del dropped
        gc.collect()
        assert emu.stat("live_graphs") == graphs
        step.close()
    assert settle(emu) == start


def test_write_indices_checks_before_writing(graph_dev: Device, emu: Emu) -> None:
    with Stream() as stream:
        step = Step(stream)
        g, idx, _ = step.capture()
        for bad, why in ((np.array([0, 3, 7, 40]), "start"), (np.array([0, 3]), "shape"),
                         (np.array([0.0, 1, 2, 3]), "integers")):
            with pytest.raises(InvalidValueError, match=why):
                g.write_indices(0, bad)
        with pytest.raises(InvalidValueError, match="call"):
            g.write_indices(LAYERS, idx)
        np.testing.assert_array_equal(step.idx.to_numpy(stream=stream), idx)  # nothing was written
        g.close()
        step.close()


def test_a_toolkit_without_graph_capture_gets_a_clear_error(dev: Device, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANN_EMU_NO_GRAPH", "1")  # the build leaves the aclmdlRI* symbols out
    root = tmp_path / "no-graph"
    build(root)
    script = ("import pyacl_qscatter as qs\n"
              "from pyacl_qscatter import _calls, runtime\n"
              "runtime.ensure_runtime()\n"
              "assert not _calls.bound().caps.graph\n"
              "try:\n"
              "    qs.Graph()\n"
              "except qs.GraphCaptureError as exc:\n"
              "    print('refused:', exc)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=subprocess_env(root), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "aclmdlRICaptureBegin" in out.stdout
