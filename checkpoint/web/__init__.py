"""Web pages: the marshal's phone page on the box and HQ's live timing board.

Both are small aiohttp applications, each running in its own asyncio loop on its own
thread (`server.ServerThread`), so nothing a browser does can hold up the box's core
thread or HQ's collector: the marshal page only reads immutable snapshots the daemon
publishes and enqueues corrections; the board reads HQ's SQLite read-only.

Modules, in the order data flows through them:

* `auth`        PIN/password check (constant time), sessions, wrong-PIN rate limit. Pure.
* `forms`       validation of what a browser sends (seq, car, reason, box). Pure.
* `marshal_view` what the marshal page shows, from the daemon's status snapshot. Pure.
* `board_data`  what the HQ board shows, read from HQ's database (read-only connection).
* `server`      aiohttp plumbing both share: thread, login, SSE hub, headers, static files.
* `marshal`     `MarshalServer`, served by the box.
* `board`       `BoardServer`, served by `checkpoint hq serve`.
* `office_web`  the board's /results pages (no login) and its classification panel.
* `boxhook`     starting the marshal server from the box config.
* `serve_cli`   the `checkpoint hq serve` command.

Only `server`, `marshal`, `board` and `office_web` import aiohttp. Pages are static files in
`static/` (vanilla JS and CSS, no build step, no CDN): the box serves every byte a
phone needs, so the page works on a marshal Wi-Fi with no internet.
"""
