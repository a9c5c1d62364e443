"""doctor's look at the marshal page: is it served where the config says?

The daemon runs on without its page when the port is taken (timing matters more),
and says so in its status alarms; doctor asks the page itself, as a marshal's phone
would, so "the page does not open" is found before the marshal is at the roadside.
"""

from __future__ import annotations

import http.client
from typing import Any

#: Facts.web values: "off" (page not enabled), "served", or what went wrong.
OFF, SERVED = "off", "served"


def page_url(cfg: Any) -> str:
    """Where a phone on the box's own network finds the page ("" when it is off)."""
    web = getattr(cfg, "web", None)
    if web is None or not web.enabled:
        return ""
    host = "127.0.0.1" if web.host in ("0.0.0.0", "::", "") else web.host
    return f"http://{host}:{web.port}/"


def probe(url: str, timeout_s: float = 3.0) -> str:
    """SERVED if `url`login answers as the marshal page's login does, else why not."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=timeout_s)
    try:
        conn.request("GET", "/login")
        resp = conn.getresponse()
        body = resp.read(4096)
    except ConnectionRefusedError:
        return "nothing listens there"
    except OSError as e:
        return f"no answer ({e.strerror or e})"
    finally:
        conn.close()
    if resp.status != 200 or b"<form" not in body:
        return f"something else answers there (HTTP {resp.status})"
    return SERVED
