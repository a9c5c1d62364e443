"""The quick demo: the California Mille's route, boxes and faults with fewer cars."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim import scenario
from sim.__main__ import build_parser

MILLE = Path(__file__).resolve().parent.parent / "sim" / "scenarios" / "california_mille.toml"


def test_first_cars_keeps_route_and_boxes_and_cuts_the_field():
    full = scenario.load(MILLE)
    quick = scenario.first_cars(full, 24)
    assert quick.cars.count == 24 < full.cars.count
    assert quick.boxes == full.boxes and quick.controls == full.controls
    assert scenario.first_cars(full, None) is full
    assert scenario.first_cars(full, 10_000) is full
    with pytest.raises(scenario.ScenarioError, match="--cars"):
        scenario.first_cars(full, 0)


def test_sim_run_takes_cars_and_dev_demo_passes_it_unless_full():
    args = build_parser().parse_args(["run", str(MILLE), "--cars", "20"])
    assert args.cars == 20
    dev = (MILLE.parent.parent.parent / "dev").read_text()
    assert "quick=(--cars 20)" in dev and '"$a" = --full' in dev
