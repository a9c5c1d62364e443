"""Why the GPS serial port cannot be opened, in words a marshal can act on.

A receiver is often not there when the daemon starts: a USB receiver plugged in after
boot, a HAT's UART whose udev symlink (/dev/gps0) appears a moment later. The serial
reader (checkpoint.box.gps_serial.SerialReader) keeps retrying; this names the cause for its
log line and the daemon's status alarm.

The permission case that bites on Pi OS: the unit is `DevicePolicy=closed` with
`DeviceAllow=char-ttyACM`/`char-ttyUSB`, and systemd turns those classes into device
numbers when the unit starts, from /proc/devices, which lists a class only once its
driver is loaded. A USB receiver's driver (cdc_acm, usbserial) is loaded by udev when
the first such device is plugged in; plugged in after the service started, it was
refused with EPERM. `checkpoint install` ships /etc/modules-load.d/checkpoint.conf so
both drivers load at boot, before the unit starts.
"""

from __future__ import annotations

import errno
import os


def missing(url: str) -> bool:
    """True when `url` is a device path that does not exist (yet)."""
    return url.startswith("/") and not os.path.exists(url)


def _errno(err: BaseException) -> int | None:
    # pyserial wraps the OSError in a SerialException that carries its errno.
    code = getattr(err, "errno", None)
    if code is None and isinstance(err.__context__, OSError):
        code = err.__context__.errno
    return code if isinstance(code, int) else None


def open_failure(url: str, err: BaseException) -> str:
    """One line on why opening `url` failed and what to do."""
    if missing(url):
        return (
            f"GPS port {url} not present: waiting for it to appear (plug in the "
            "receiver, or check the udev rule for /dev/gps0)"
        )
    code = _errno(err)
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"GPS port {url}: permission denied ({err}): the service user must be in "
            "group dialout, and a USB receiver's driver must be loaded before the "
            "service starts (/etc/modules-load.d/checkpoint.conf from checkpoint "
            "install); sudo systemctl restart checkpoint after fixing"
        )
    if code == errno.EBUSY:
        return f"GPS port {url} busy: another program holds it (gpsd? a serial console?)"
    return f"cannot open {url}: {err}"
