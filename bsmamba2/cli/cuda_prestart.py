"""Start the CUDA driver and the device's primary context while ``import torch`` runs (issue 12).

``import torch`` takes ~1.9 s of a fresh process and CUDA's start (driver initialisation, then the device's
primary context) another 0.2-0.5 s on an H200, which torch only begins once imported. Both steps are plain
driver calls that need no torch: :func:`start` makes them on a daemon thread through ``ctypes`` (which
releases the GIL for the call), so they run on another core beside the import. The CUDA runtime that torch
loads later uses the same primary context (one per device and process), so its own start finds the work
done. The context is kept retained for the life of the process, as torch keeps it.

This module imports nothing heavy: ``bsmamba2 separate`` calls it after parsing, before torch loads
(``before_torch`` in :mod:`~bsmamba2.cli.separate`). Nothing happens for a device that is not CUDA's, with
``BSMAMBA2_CUDA_WARM_UP=0``, or where there is no driver; a failure is only logged (at debug), and torch's
own start then meets it again and reports it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

WARM_UP_ENV = "BSMAMBA2_CUDA_WARM_UP"  # the switch of the whole warm-up (cli/warmup.py): "0" turns it off
DRIVER = (
    "libcuda.so.1"  # Linux's driver library; elsewhere (macOS, Windows) nothing is found and nothing runs
)
_retained: list[Any] = []  # the primary contexts this process retained (kept: released, one would end)


def device_index(name: str) -> int | None:
    """The CUDA ordinal ``--device name`` will resolve to, or None if it is not a CUDA device: "auto" and
    "cuda" give LOCAL_RANK (torchrun's; 0 without), as ``bsmamba2.device.resolve_device`` does on a machine
    with a GPU (taken modulo the device count once the driver knows it), "cuda:N" gives N."""
    name = name.strip().lower()
    if name in ("auto", "cuda"):
        rank = os.environ.get("LOCAL_RANK", "0")
        return int(rank) if rank.isdigit() else 0
    if name.startswith("cuda:") and name[5:].isdigit():
        return int(name[5:])
    return None


def start(device: str, load: Callable[[str], Any] = ctypes.CDLL) -> threading.Thread | None:
    """Begin the driver's start for ``--device device`` on a daemon thread; None, nothing started, for
    a device that is not CUDA's or with ``BSMAMBA2_CUDA_WARM_UP=0``. ``load``: opens the driver library
    (tests pass a stand-in)."""
    index = device_index(device)
    if index is None or os.environ.get(WARM_UP_ENV, "").strip() == "0":
        return None
    explicit = device.strip().lower().startswith("cuda:")
    thread = threading.Thread(
        target=_retain, args=(load, index, explicit), name="bsmamba2-cuda-prestart", daemon=True
    )
    thread.start()
    return thread


def _retain(load: Callable[[str], Any], index: int, explicit: bool) -> None:
    """cuInit, then retain the primary context of device ``index`` (modulo the device count unless the user
    named it: resolve_device takes LOCAL_RANK modulo the count, and refuses a "cuda:N" beyond it)."""
    try:
        lib = load(DRIVER)
        _check(lib.cuInit(0), "cuInit")
        count = ctypes.c_int(0)
        _check(lib.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
        if count.value < 1 or (explicit and index >= count.value):
            return  # torch reports it (no GPU, or no such device)
        dev = ctypes.c_int(0)
        _check(lib.cuDeviceGet(ctypes.byref(dev), index % count.value), "cuDeviceGet")
        ctx = ctypes.c_void_p()
        _check(lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
        _retained.append(ctx)
    except (OSError, AttributeError, RuntimeError) as e:  # no driver, an old one, or a failing call
        log.debug("CUDA pre-start for device %d: %s", index, e)


def _check(code: int, call: str) -> None:
    if code != 0:
        raise RuntimeError(f"{call} returned CUDA error {code}")
