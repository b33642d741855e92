"""The loaded toolkit's introspection interface, when it has one (``python -m pyacl_qscatter stress``).

Some CANN builds used for testing (the project's emulator of CANN among them) export, from the runtime
library, ``int64_t emuGetStat(const char *name)`` (a counter: ``live_device_blocks``, ``errors_detected``,
``calls:<symbol>``...; -1 for an unknown name), ``void emuReset(void)`` and
``int emuInjectFault(const char *symbol, int nth, int code)``. A real CANN exports none of them: every
figure that needs them is then reported as unavailable, with the reason, and nothing else changes.
"""

from __future__ import annotations

import ctypes
from typing import Any

__all__ = ["LIVE_COUNTERS", "Probe", "rss_bytes"]

# Objects the package creates and must release (live_device_bytes follows live_device_blocks).
LIVE_COUNTERS = ("live_device_blocks", "live_device_bytes", "live_tensors", "live_executors", "live_streams",
                 "live_events", "live_host_blocks")


def rss_bytes() -> int | None:
    """Resident memory of this process (VmRSS from /proc/self/status), or None where there is no /proc.

    >>> (rss_bytes() or 1) > 0
    True
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class Probe:
    """Counters and fault injection of the loaded runtime library, where it exports them.

    >>> probe = Probe(None, "CANN is not loaded")
    >>> probe.counters, probe.faults, probe.live(), probe.inject("aclrtMalloc", 1, 207001)
    (False, False, None, False)
    """

    def __init__(self, rt_path: str | None, why: str = "") -> None:
        self._get: Any = None
        self._inject: Any = None
        self._reset: Any = None
        self._detected_before_reset = 0
        self.why = why
        if rt_path is not None:
            try:
                lib = ctypes.CDLL(rt_path)  # the library CANN was loaded from: same instance, same state
            except OSError as exc:
                self.why = f"cannot open {rt_path}: {exc}"
                return
            self._get = getattr(lib, "emuGetStat", None)
            if self._get is not None:
                self._get.restype = ctypes.c_int64
                self._get.argtypes = [ctypes.c_char_p]
            self._inject = getattr(lib, "emuInjectFault", None)
            if self._inject is not None:
                self._inject.restype = ctypes.c_int
                self._inject.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
            self._reset = getattr(lib, "emuReset", None)
            if self._get is None:
                self.why = f"{rt_path} exports no introspection counters (emuGetStat): a real CANN"
            elif self._inject is None or self._reset is None:
                self.why = f"{rt_path} exports no fault injection (emuInjectFault, emuReset)"

    @classmethod
    def for_loaded_cann(cls) -> Probe:
        """The probe of the CANN the package uses (loading it if needed).

        >>> Probe.for_loaded_cann().counters in (True, False)
        True
        """
        from .. import _loader
        from ..errors import CannNotFoundError

        try:
            cann = _loader.load()
        except CannNotFoundError as exc:
            return cls(None, f"CANN is not loaded: {str(exc).splitlines()[0]}")
        return cls(cann.paths.get("rt"))

    @property
    def counters(self) -> bool:
        """True when counters can be read.

        >>> Probe(None).counters
        False
        """
        return self._get is not None

    @property
    def faults(self) -> bool:
        """True when faults can be injected (and dropped again).

        >>> Probe(None).faults
        False
        """
        return self._inject is not None and self._reset is not None and self._get is not None

    def stat(self, name: str) -> int | None:
        """One counter, or None when there are no counters (or the name is unknown).

        >>> Probe(None).stat("live_device_blocks") is None
        True
        """
        if self._get is None:
            return None
        value = int(self._get(name.encode()))
        return None if value < 0 else value

    def live(self) -> dict[str, int] | None:
        """Every live-object counter by name, or None.

        >>> Probe(None).live() is None
        True
        """
        if self._get is None:
            return None
        return {name: int(self._get(name.encode())) for name in LIVE_COUNTERS}

    def detected(self) -> int | None:
        """Bad writes and uses after free the runtime detected since the process started (None: unknown).

        >>> Probe(None).detected() is None
        True
        """
        now = self.stat("errors_detected")
        return None if now is None else now + self._detected_before_reset

    def inject(self, symbol: str, nth: int, code: int) -> bool:
        """Make the ``nth`` call of ``symbol`` from now fail with ``code``; False when that is not possible.

        >>> Probe(None).inject("aclrtMalloc", 1, 207001)
        False
        """
        if not self.faults:
            return False
        return int(self._inject(symbol.encode(), nth, code)) == 0

    def clear_faults(self) -> None:
        """Drop faults that never fired (this also zeroes the call and traffic counters).

        >>> Probe(None).clear_faults()
        """
        if self.faults:
            self._detected_before_reset += self.stat("errors_detected") or 0
            self._reset()
