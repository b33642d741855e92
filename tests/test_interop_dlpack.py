"""DLPack both ways against a producer and a consumer written in the tests (tests/dlpack_peer.py, ctypes)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any, NamedTuple

import ml_dtypes
import numpy as np
import pytest
from dlpack_peer import IS_COPIED, KDL_ASCEND, KDL_EXT_DEV, READ_ONLY, Borrowed, ForeignTensor, capsule_name, consume
from emulator.emu import CannLibs, Emu

import pyacl_qscatter as qs
from pyacl_qscatter import dlpack
from pyacl_qscatter.errors import InvalidDtypeError, InvalidValueError, QScatterError
from pyacl_qscatter.memory import DeviceArray, allocator_for
from pyacl_qscatter.runtime import Device, Stream, ensure_runtime

pytestmark = pytest.mark.emulator
BF16 = ml_dtypes.bfloat16
SYNCS = ("aclrtSynchronizeStream", "aclrtSynchronizeStreamWithTimeout", "aclrtSynchronizeDevice",
         "aclrtSynchronizeEvent", "aclrtMemcpy")


class Peer(NamedTuple):
    c: CannLibs
    stream: Any  # the foreign runtime's own aclrtStream

    @property
    def handle(self) -> int:
        return int(self.c.ffi.cast("uintptr_t", self.stream))


@pytest.fixture
def peer(dev: Device, emulator_cann: CannLibs) -> Iterator[Peer]:
    # The foreign runtime shares this thread's current context, which the package made current (a reset
    # here would end it for the package too).
    c = emulator_cann
    stream = c.create_stream()
    yield Peer(c, stream)
    c.check(c.rt.aclrtDestroyStream(stream), "aclrtDestroyStream")


def calls(emu: Emu, symbol: str) -> int:
    return max(emu.calls(symbol), 0)  # -1: the emulator does not export the symbol (yet)


def host_waits(emu: Emu) -> int:
    return sum(calls(emu, name) for name in SYNCS)


def settled(emu: Emu) -> dict[str, int]:
    """Live counters once garbage is collected and the allocator's cache handed back (cached blocks are
    reused memory, not leaks)."""
    gc.collect()
    allocator_for(0).empty_cache()
    return emu.live()


# ----------------------------------------------------------------------------------------------- export

def test_legacy_and_versioned_capsules_describe_the_array(peer: Peer) -> None:
    host = np.arange(4 * 6 * 32, dtype=np.int32).reshape(4, 6, 32)
    d = DeviceArray.from_numpy(host)
    for max_version, versioned in ((None, False), ((0, 8), False), ((1, 0), True), ((1, 3), True), ((2, 0), True)):
        capsule = d.__dlpack__(max_version=max_version)
        assert capsule_name(capsule) == ("dltensor_versioned" if versioned else "dltensor")
        got = Borrowed(capsule)
        assert capsule_name(capsule) == ("used_dltensor_versioned" if versioned else "used_dltensor")
        assert got.versioned is versioned
        assert got.version == ((1, 1) if versioned else None) and got.flags == 0
        assert (got.data, got.device, got.shape, got.dtype) == (d.data_ptr, (KDL_ASCEND, 0), (4, 6, 32), np.int32)
        assert got.strides == (192, 32, 1)
        np.testing.assert_array_equal(got.read(peer.c), host)
        got.release()
    assert dlpack.exported_count() == 0


def test_strided_views_export_their_strides_in_elements(peer: Peer) -> None:
    host = np.arange(4 * 6 * 64, dtype=np.float16).reshape(4, 6, 64)
    d = DeviceArray.from_numpy(host)
    for key in ((slice(1, None), slice(None, None, 2)), (Ellipsis, slice(3, 40, 3)), (2,), (None, 1, -1)):
        got = consume(d[key], max_version=(1, 0))
        assert got.shape == host[key].shape
        assert got.strides == tuple(s // 2 for s in host[key].strides)
        np.testing.assert_array_equal(got.read(peer.c), host[key])
        got.release()
    got = consume(d.transpose(2, 0, 1))
    np.testing.assert_array_equal(got.read(peer.c), host.transpose(2, 0, 1))
    got.release()


def test_kdlextdev_on_request_and_wrong_devices_refused(peer: Peer) -> None:
    d = DeviceArray.from_numpy(np.ones((2, 32), np.int8))
    got = consume(d, dl_device=(KDL_EXT_DEV, 0), max_version=(1, 0))
    assert got.device == (KDL_EXT_DEV, 0) and got.data == d.data_ptr
    got.release()
    with pytest.raises(BufferError, match=r"to_numpy\(\)") as err:
        d.__dlpack__(dl_device=(1, 0))
    assert isinstance(err.value, QScatterError)
    with pytest.raises(dlpack.DLPackError, match=r"must be \(21, 0\)"):
        d.__dlpack__(dl_device=(KDL_ASCEND, 3))
    with pytest.raises(InvalidDtypeError, match="dl_device: must be a"):
        d.__dlpack__(dl_device="npu")
    with pytest.raises(InvalidDtypeError, match="max_version: must be a"):
        d.__dlpack__(max_version=1)
    with pytest.raises(InvalidDtypeError, match="stream: must be an aclrtStream handle"):
        d.__dlpack__(stream="default")
    assert d.__dlpack_device__() == (KDL_ASCEND, 0)
    assert dlpack.exported_count() == 0


def test_numpy_refuses_device_memory_use_to_numpy() -> None:
    d = DeviceArray.from_numpy(np.arange(4, dtype=np.int8))
    with pytest.raises(RuntimeError, match="Unsupported device"):  # NumPy's own refusal, intact
        np.from_dlpack(d)
    assert dlpack.exported_count() == 0  # the capsule NumPy dropped was swept
    assert d.to_numpy().tolist() == [0, 1, 2, 3]


def test_copy_true_exports_a_copy_flagged_as_copied(peer: Peer) -> None:
    host = np.arange(3 * 64, dtype=np.int8).reshape(3, 64)
    d = DeviceArray.from_numpy(host)
    got = consume(d[:, ::2], max_version=(1, 0), copy=True)
    assert got.flags == IS_COPIED and got.data != d.data_ptr and got.strides == (32, 1)
    peer.c.check(peer.c.rt.aclrtSynchronizeDevice(), "sync")  # the copy is queued on the array's stream
    np.testing.assert_array_equal(got.read(peer.c), host[:, ::2])
    got.release()


def test_exporter_stays_alive_until_the_deleter_and_an_unconsumed_capsule_deletes(peer: Peer, emu: Emu) -> None:
    before = settled(emu)
    host = np.arange(64, dtype=np.int8)
    d = DeviceArray.from_numpy(host)
    alive = weakref.ref(d)
    got = consume(d[::2])
    del d
    gc.collect()
    assert alive() is not None  # the consumer still holds it
    np.testing.assert_array_equal(got.read(peer.c), host[::2])
    got.release()
    gc.collect()
    assert alive() is None
    capsule = DeviceArray.from_numpy(host).__dlpack__(max_version=(1, 0))
    assert dlpack.exported_count() == 1
    del capsule  # never consumed: its destructor runs the deleter
    gc.collect()
    assert dlpack.exported_count() == 0
    assert settled(emu) == before


# ----------------------------------------------------------------------------------------------- import

@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("max_version", [(1, 0), None], ids=["versioned", "legacy"])
def test_import_kdlascend_zero_copy_with_one_deleter_call(peer: Peer, emu: Emu, strided: bool,
                                                          max_version: Any) -> None:
    host = np.random.default_rng(1).integers(-100, 100, (3, 5, 32)).astype(np.int8)
    producer = ForeignTensor(peer.c, host, strided=strided)
    if max_version is None:  # a producer older than DLPack 1.0: no max_version keyword at all
        legacy = producer.__dlpack__
        producer.__dlpack__ = lambda *, stream=None: legacy(stream=stream)  # type: ignore[method-assign]
    before = settled(emu)
    d = qs.from_dlpack(producer)
    assert d.data_ptr == producer.address + producer.byte_offset  # zero-copy
    assert d.element_strides == producer.elem_strides and d.shape == host.shape
    assert producer.streams == [Device(0).stream.handle]  # asked to order before our stream
    np.testing.assert_array_equal(d.to_numpy(), host)
    view = d[1:, ::2]
    d.close()
    assert producer.deleted == 1 and view.closed
    d.close()
    gc.collect()
    assert producer.deleted == 1
    assert settled(emu) == before
    producer.free()


def test_import_keeps_the_producer_alive_and_collection_deletes_once(peer: Peer) -> None:
    producer = ForeignTensor(peer.c, np.ones((2, 32), np.int8))
    alive = weakref.ref(producer)
    d = qs.from_dlpack(producer)
    view = d[1]
    del producer, d
    gc.collect()
    assert alive() is not None and alive().deleted == 0  # type: ignore[union-attr]
    assert view.to_numpy().tolist() == [1] * 32
    del view
    gc.collect()
    assert alive() is None  # the deleter ran and the producer was released


def test_import_on_a_given_stream_passes_its_handle(peer: Peer) -> None:
    producer = ForeignTensor(peer.c, np.ones((2, 32), np.int8))
    with Stream() as s:
        d = qs.from_dlpack(producer, stream=s)
        assert producer.streams == [s.handle] and d.stream is s
        d.close()
    assert producer.deleted == 1
    producer.free()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"flags": READ_ONLY}, "read-only"),
    ({"version": (2, 0)}, "major version 1"),
    ({"dtype_code": (1, 8)}, "is not one a DeviceArray holds"),
    ({"negative": True}, "negative stride"),
])
def test_import_refusals_still_call_the_deleter_once(peer: Peer, kwargs: dict[str, Any], message: str) -> None:
    producer = ForeignTensor(peer.c, np.ones((2, 32), np.int8), **kwargs)
    with pytest.raises(dlpack.DLPackError, match=message):
        qs.from_dlpack(producer)
    assert producer.deleted == 1
    producer.free()


def test_import_refuses_non_ascend_producers(peer: Peer) -> None:
    with pytest.raises(dlpack.DLPackError, match=r"for host arrays use DeviceArray\.from_numpy"):
        qs.from_dlpack(np.ones(3))
    with pytest.raises(InvalidDtypeError, match="obj: must support DLPack"):
        qs.from_dlpack([1, 2])
    producer = ForeignTensor(peer.c, np.ones((2, 32), np.int8))
    capsule = producer.__dlpack__()
    Borrowed(capsule).release()

    class Replay:
        def __dlpack_device__(self) -> tuple[int, int]:
            return (KDL_ASCEND, 0)

        def __dlpack__(self, **_: Any) -> object:
            return capsule  # already consumed

    with pytest.raises(dlpack.DLPackError, match="can be consumed only once"):
        qs.from_dlpack(Replay())
    with pytest.raises(InvalidValueError, match="device: must be in"):
        qs.from_dlpack(type("Far", (Replay,), {"__dlpack_device__": lambda self: (KDL_ASCEND, 7)})())
    producer.free()


def test_kdlextdev_needs_ascend_device_memory(peer: Peer) -> None:
    host_buffer = np.ones((2, 32), np.int8)
    producer = ForeignTensor(peer.c, host_buffer, device_type=KDL_EXT_DEV)
    if not ensure_runtime().caps.pointer_attributes:
        with pytest.raises(dlpack.DLPackError, match="lacks aclrtPointerGetAttributes"):
            qs.from_dlpack(producer)
        assert producer.deleted == 1
        producer.free()
        pytest.skip("the emulator does not export aclrtPointerGetAttributes yet (emu adds it)")
    d = qs.from_dlpack(producer)
    np.testing.assert_array_equal(d.to_numpy(), host_buffer)
    d.close()
    producer.free()
    # the same type from an unrelated backend: host memory, not Ascend device memory
    fake = ForeignTensor(peer.c, host_buffer, device_type=KDL_EXT_DEV)
    fake.address = host_buffer.ctypes.data
    with pytest.raises(dlpack.DLPackError, match="is not memory of Ascend device 0"):
        qs.from_dlpack(fake)
    assert fake.deleted == 1
    fake.free()


# ------------------------------------------------------------------------------------------ round trips

def _needs_ext_dev(device_type: int) -> None:
    if device_type == KDL_EXT_DEV and not ensure_runtime().caps.pointer_attributes:
        pytest.skip("kDLExtDev imports need aclrtPointerGetAttributes, which the emulator does not export yet")


@pytest.mark.parametrize("device_type", [KDL_ASCEND, KDL_EXT_DEV], ids=["kDLAscend", "kDLExtDev"])
@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
def test_foreign_cache_runs_the_op_bit_exact(peer: Peer, emu: Emu, device_type: int, strided: bool) -> None:
    # A foreign runtime's KV cache -> from_dlpack -> the op on the device -> read back through the producer.
    _needs_ext_dev(device_type)
    rng = np.random.default_rng(7)
    cache = rng.integers(-128, 128, (3, 8, 64), dtype=np.int8)
    idx = np.array([5, 0, 2], np.int32)
    upd = rng.uniform(-6, 6, (3, 2, 64)).astype(BF16)
    sc = rng.uniform(0.02, 1, 64).astype(BF16)
    expected = qs.quant_scatter(cache, idx, upd, sc, backend="cpu")
    before = settled(emu)
    producer = ForeignTensor(peer.c, cache, device_type=device_type, strided=strided)
    d = qs.from_dlpack(producer)
    qs.quant_scatter_(d, DeviceArray.from_numpy(idx), DeviceArray.from_numpy(upd), DeviceArray.from_numpy(sc))
    d.stream.synchronize()
    np.testing.assert_array_equal(producer.to_numpy(), expected)
    d.close()
    gc.collect()
    assert producer.deleted == 1
    producer.free()
    assert settled(emu) == before
    assert emu.stat("errors_detected") == 0


@pytest.mark.parametrize("dl_device", [None, (KDL_EXT_DEV, 0)], ids=["kDLAscend", "kDLExtDev"])
@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
def test_round_trip_export_foreign_op_import_back(peer: Peer, emu: Emu, dl_device: Any, strided: bool) -> None:
    # Ours -> a foreign consumer, which re-exports the same memory as its own tensor -> back to us, where the
    # op runs on it; the original array sees the result, bit-exact against the cpu reference.
    _needs_ext_dev(KDL_EXT_DEV if dl_device else KDL_ASCEND)
    rng = np.random.default_rng(11)
    cache = rng.integers(-128, 128, (2, 6, 64), dtype=np.int8)
    idx = np.array([[1, 3], [0, 0]], np.int64)
    upd = rng.uniform(-6, 6, (2, 2, 64)).astype(np.float16)
    sc = rng.uniform(0.02, 1, 64).astype(np.float32)
    zp = rng.integers(-5, 5, 64).astype(np.int32)
    expected = qs.quant_scatter(cache, idx, upd, sc, zp, backend="cpu")
    before = settled(emu)
    base = DeviceArray.zeros((2, 12, 64) if strided else (2, 6, 64), np.int8)
    ours = base[:, ::2] if strided else base
    ours[...] = cache
    borrowed = consume(ours, max_version=(1, 0), dl_device=dl_device, stream=-1)
    producer = ForeignTensor.over(peer.c, borrowed)  # the foreign runtime's own tensor over that memory
    back = qs.from_dlpack(producer)
    assert back.data_ptr == ours.data_ptr and back.strides == ours.strides
    qs.quant_scatter_(back, idx, upd, sc, zp)
    back.stream.synchronize()
    np.testing.assert_array_equal(ours.to_numpy(), expected)
    back.close()
    assert producer.deleted == 1
    borrowed.release()
    del ours, base, back, borrowed
    assert dlpack.exported_count() == 0
    assert settled(emu) == before
    assert emu.stat("errors_detected") == 0


# --------------------------------------------------------------------------------------------- streams

def _pending_write(producer_stream: Stream) -> tuple[DeviceArray, np.ndarray]:
    """A cache on ``producer_stream`` with the op queued on it and not yet run."""
    rng = np.random.default_rng(3)
    cache = np.zeros((2, 4, 32), np.int8)
    upd = rng.uniform(-6, 6, (2, 1, 32)).astype(BF16)
    sc = np.full(32, 0.5, BF16)
    idx = np.array([3, 1], np.int32)
    d = DeviceArray.zeros(cache.shape, np.int8, stream=producer_stream)
    producer_stream.synchronize()
    d_idx, d_upd, d_sc = (DeviceArray.from_numpy(v, stream=producer_stream) for v in (idx, upd, sc))
    qs.quant_scatter_(d, d_idx, d_upd, d_sc, stream=producer_stream, check_indices=False)
    return d, qs.quant_scatter(cache, idx, upd, sc, backend="cpu")


def _consumer_copy(peer: Peer, got: Borrowed, nbytes: int) -> np.ndarray:
    """The consumer's own work on its stream: an asynchronous copy out of the borrowed memory."""
    c = peer.c
    dst = c.malloc(nbytes)
    c.check(c.rt.aclrtMemcpyAsync(dst, nbytes, c.ffi.cast("void *", got.data), nbytes, 3, peer.stream), "copy")
    c.check(c.rt.aclrtSynchronizeStream(peer.stream), "sync")
    out = np.frombuffer(c.d2h(dst, nbytes), np.int8).copy()
    c.free(dst)
    return out


def test_consumer_stream_sees_the_producers_writes_without_a_host_wait(peer: Peer, emu: Emu) -> None:
    caps = ensure_runtime().caps
    if not (caps.stream_wait_event and caps.event_ex_with_flag):
        pytest.skip("needs aclrtStreamWaitEvent and aclrtCreateEventExWithFlag in the emulator (emu2 adds them)")
    with Stream() as producer_stream:
        d, expected = _pending_write(producer_stream)
        emu.reset()
        got = consume(d, stream=peer.handle, max_version=(1, 0))
        assert host_waits(emu) == 0 and calls(emu, "aclrtStreamWaitEvent") == 1
        if emu.stat("host_syncs") >= 0:
            assert emu.stat("host_syncs") == 0
        np.testing.assert_array_equal(_consumer_copy(peer, got, d.nbytes).reshape(d.shape), expected)
        got.release()


def test_consumer_stream_sees_the_producers_writes(peer: Peer, emu: Emu) -> None:
    # Whatever the toolkit offers (events, or a host wait on an older one), the ordering holds.
    with Stream() as producer_stream:
        d, expected = _pending_write(producer_stream)
        got = consume(d, stream=peer.handle)
        np.testing.assert_array_equal(_consumer_copy(peer, got, d.nbytes).reshape(d.shape), expected)
        got.release()
        producer_stream.synchronize()


def test_stream_minus_one_and_the_same_stream_need_no_ordering(peer: Peer, emu: Emu) -> None:
    with Stream() as producer_stream:
        d, _ = _pending_write(producer_stream)
        emu.reset()
        consume(d, stream=-1).release()
        consume(d, stream=producer_stream.handle).release()
        assert host_waits(emu) == 0
        assert calls(emu, "aclrtRecordEvent") == 0 and calls(emu, "aclrtStreamWaitEvent") == 0
        producer_stream.synchronize()


def test_no_leaks_over_many_exchanges(peer: Peer, emu: Emu) -> None:
    d = DeviceArray.from_numpy(np.ones((4, 32), np.int8))
    consume(d, stream=peer.handle).release()  # the per-device ordering event, made once
    before = settled(emu)
    for i in range(200):
        got = consume(d[i % 4], stream=peer.handle, max_version=(1, 0) if i % 2 else None)
        back = qs.from_dlpack(d[:, i % 8 :])
        back.close()
        got.release()
    assert dlpack.exported_count() == 0
    assert settled(emu) == before
