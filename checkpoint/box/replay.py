"""Replay a capture through the box's own pipeline: every event the daemon would
have published, in order (`checkpoint replay`, the simulator's verdict).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from checkpoint import capture
from checkpoint.config import Config, InputConfig
from checkpoint.contracts import is_int
from checkpoint.core.timing import Pipeline, params_for
from checkpoint.errors import ConfigError


def _replay_inputs(path: str, head: dict[str, Any]) -> tuple[InputConfig, ...]:
    """Inputs from the capture header, else one default input per name seen."""
    if isinstance(head.get("inputs"), list):
        try:
            return tuple(InputConfig(**i) for i in head["inputs"])
        except TypeError as e:
            raise ConfigError(f"{path}: header inputs are not input settings: {e}") from None
    _, records = capture.read(path)
    names: dict[str, None] = {}
    for rec in records:
        if rec["type"] == "edge":
            names.setdefault(rec["input"])
    return tuple(
        InputConfig(name=n, pin=f"capture:{n}", source="manual" if "button" in n else "beam")
        for n in names
    )


def replay_events(
    path: str, cfg: Config | None = None, *, store: str = "replay"
) -> Iterator[dict[str, Any]]:
    """Every event the daemon would have published for this capture, in order.

    Settings come from `cfg` if given, else from the capture's header, else defaults.
    """
    pipe, records = open_replay(path, cfg, store=store)
    feed = pipe.feed
    for rec in records:
        events = feed(rec)
        if events:  # most records give none
            yield from events
    yield from pipe.flush()


def open_replay(
    path: str, cfg: Config | None = None, *, store: str = "replay"
) -> tuple[Pipeline, Iterator[dict[str, Any]]]:
    """The pipeline the daemon would have run for this capture, and the capture's records
    to feed it (for a replay that also reads the clock between records)."""
    head, records = capture.read(path)
    # Recorded with a coarse pin factory: the daemon widened every bound by this.
    extra = head.get("tick_uncertainty_ns", 0)
    if not is_int(extra) or extra < 0:
        raise ConfigError(f"{path}: header tick_uncertainty_ns must be an integer >= 0")
    if cfg is not None:
        box, cp, inputs = cfg.box, cfg.checkpoint, cfg.inputs
        convention, clock = cfg.gps.convention, dict(cfg.clock)
    else:
        box, cp = str(head.get("box", "box")), str(head.get("checkpoint", "?"))
        inputs = _replay_inputs(path, head)
        convention = head.get("convention", "after")
        clock = head.get("clock") if isinstance(head.get("clock"), dict) else {}
        if convention not in ("after", "before"):
            raise ConfigError(f"{path}: header convention must be after or before")
    pipe = Pipeline(
        box=box,
        checkpoint=cp,
        store=store,
        inputs=inputs,
        convention=convention,
        clock_params=params_for(convention, clock),
        tick_uncertainty_ns=extra,
    )
    return pipe, records
