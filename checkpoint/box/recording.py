"""The daemon's capture file (`[box] capture`): every input record, for replay.

The capture is a diagnostic aid on the same card as the store: a full or read-only card
must not stop the timing, so a failed write or fsync stops recording with an alarm and
never raises. Core thread only.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from checkpoint import capture
from checkpoint.box.edges import COARSE_TICK_NS
from checkpoint.config import Config

log = logging.getLogger("checkpoint.box.daemon")


class Recording:
    """A capture.Writer that fails soft; `active` is False when not recording."""

    def __init__(self, cfg: Config, alarms: dict[str, str], *, kernel_ticks: bool) -> None:
        self.alarms = alarms  # the daemon's: published in every status
        # In the capture header only when set, so replay widens the same bounds.
        tick_setting = {} if kernel_ticks else {"tick_uncertainty_ns": COARSE_TICK_NS}
        self._writer = (
            capture.Writer(
                cfg.capture,
                cfg.box,
                cfg.checkpoint,
                convention=cfg.gps.convention,
                clock=dict(cfg.clock),
                inputs=[dataclasses.asdict(i) for i in cfg.inputs],
                **tick_setting,
            )
            if cfg.capture
            else None
        )

    @property
    def active(self) -> bool:
        return self._writer is not None

    def write(self, rec: dict[str, Any]) -> None:
        """Append a record to the capture file, if recording; never raises."""
        self._fail_soft("write", rec)

    def sync(self) -> None:
        """fsync the capture file; a failure stops recording like a failed write."""
        self._fail_soft("sync")

    def _fail_soft(self, op: str, *args: Any) -> None:
        """The writer's `op`, if recording; a failure stops recording instead of raising."""
        if self._writer is None:
            return
        try:
            getattr(self._writer, op)(*args)
        except (OSError, ValueError) as e:
            self._failed(e)

    def close(self) -> None:
        if self._writer is None:
            return
        try:
            self._writer.close()
        except (OSError, ValueError) as e:
            log.warning("closing the capture: %s", e)

    def _failed(self, e: Exception) -> None:
        if self._writer is None:
            return
        # A half-written line may end the file.
        self.alarms["capture"] = (
            f"capture recording stopped: {e}; passages are not affected "
            "(free space or fix the card, then restart the daemon to record again)"
        )
        log.error("%s", self.alarms["capture"])
        try:
            self._writer.close()
        except (OSError, ValueError):
            pass
        self._writer = None
