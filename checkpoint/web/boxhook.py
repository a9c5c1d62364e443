"""Starting the marshal page from the box's config and daemon (`checkpoint run`).

Two steps so that a bad PIN file stops `checkpoint run` before the daemon opens
anything (like an unsafe MQTT key does), while a page that cannot bind its address
never stops the timing: the box times cars without its page, and says so in an alarm.

    pin = marshal_pin(cfg)                        # ConfigError: refuse to start
    daemon = BoxDaemon(cfg, ...)
    page = start_marshal(cfg, daemon, pin)        # None when [web] is off or failed
    try:
        daemon.run()
    finally:
        if page is not None:
            page.stop()
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from checkpoint.errors import CheckpointError
from checkpoint.web.auth import load_secret

if TYPE_CHECKING:
    from checkpoint.web.marshal import MarshalServer


class MarshalBox(Protocol):
    """What the marshal page needs of the box daemon (`box.daemon.BoxDaemon` has it).

    Must: `snapshot` (the latest status dict) and `recent` (recent passages with their
    corrections applied), both read on every look and cheap; `correction(kind, ref_seq,
    value)`, which only enqueues for the core thread; `alarms`, where the page reports
    why it is not served (the daemon publishes them in every status).
    """

    alarms: dict[str, str]

    @property
    def snapshot(self) -> dict[str, Any]: ...

    @property
    def recent(self) -> tuple[dict[str, Any], ...]: ...

    def correction(self, kind: str, ref_seq: int, value: str) -> None: ...


log = logging.getLogger("checkpoint.web")


def _web(cfg: Any) -> Any:
    web = getattr(cfg, "web", None)
    return web if web is not None and getattr(web, "enabled", False) else None


def marshal_pin(cfg: Any) -> str | None:
    """The PIN from `[web] pin_file` when the page is enabled (ConfigError if unusable)."""
    web = _web(cfg)
    if web is None:
        return None
    return load_secret(web.pin_file, "web.pin_file")


def _office(cfg: Any, daemon: MarshalBox) -> Any:
    """The rally office at this control from `[web] event` and `entries`, if given.

    A file that cannot be read or is wrong costs the predictions, never the page or
    the timing: the daemon's alarm says why.
    """
    web = _web(cfg)
    ev_path, en_path = getattr(web, "event", ""), getattr(web, "entries", "")
    if not ev_path or not en_path:
        return None
    # Only a box given an entry list pays for loading HQ's parsers.
    from checkpoint.hq.entries import parse_entries
    from checkpoint.hq.event import parse_event
    from checkpoint.web.marshal_office import MarshalOffice

    try:
        office = MarshalOffice(
            parse_event(Path(ev_path).read_text(encoding="utf-8"), ev_path),
            parse_entries(Path(en_path).read_text(encoding="utf-8"), en_path),
            cfg.checkpoint,
        )
    except (OSError, UnicodeDecodeError, CheckpointError) as e:
        log.error("marshal page: no predictions: %s", e)
        daemon.alarms["office"] = f"marshal page has no car predictions: {e}"
        return None
    if not office.usable:
        daemon.alarms["office"] = f"{cfg.checkpoint} is not a scheduled control of {ev_path}"
        return None
    return office


def start_marshal(cfg: Any, daemon: MarshalBox, pin: str | None) -> MarshalServer | None:
    """Serve the marshal page for `daemon`; None when disabled or the address is unusable.

    Reads `daemon.snapshot` (latest status dict) and `daemon.recent` (tuple of recent
    passages, corrections applied) on every look, and hands corrections to
    `daemon.correction`, which only enqueues for the core thread.
    """
    web = _web(cfg)
    if web is None or pin is None:
        return None
    # aiohttp is loaded only by a box that serves the page.
    from checkpoint.web.marshal import MarshalServer
    from checkpoint.web.server import WebError

    server = MarshalServer(
        lambda: daemon.snapshot,
        lambda: daemon.recent,
        daemon.correction,
        host=web.host,
        port=web.port,
        pin=pin,
        office=_office(cfg, daemon),
    )
    try:
        server.start()
    except WebError as e:
        log.error("%s", e)
        # The daemon publishes its alarms in every status: HQ and doctor see this.
        daemon.alarms["web"] = f"marshal page not served: {e}; timing is not affected"
        return None
    return server
