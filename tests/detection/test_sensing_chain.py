"""The whole chain on the virtual board's simulated chip: air ramp -> lagging BME680 registers ->
our driver -> sensing task -> heat alarm event, inside the EN 54-5 class A1 window."""

import asyncio
import sys
from pathlib import Path

import pytest
import sim

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

from test_sensing import Rig  # noqa: E402  (the portable test rig: fake board over VirtualSensors)


async def alarm_time(rate, tau):
    rig = Rig()
    rig.vs.set(tau=tau)
    await rig.steps(120)  # steady ambient first
    t0 = rig.now[0]
    lo, hi = sim.A1_WINDOWS[rate]
    while rig.now[0] - t0 <= (hi + 60) * 1000:
        rig.vs.set(t=25.0 + (rig.now[0] - t0) / 1000 * rate / 60)
        await rig.steps(2)
        for typ, cause, _ in rig.events:
            if typ == "alarm":
                assert cause == "heat"
                return (rig.now[0] - t0) / 1000
    return None


@pytest.mark.parametrize("rate", [3, 10, 30])
@pytest.mark.parametrize("tau", [20, 60])
def test_ramp_through_the_whole_chain(rate, tau):
    lo, hi = sim.A1_WINDOWS[rate]
    t = asyncio.run(alarm_time(rate, tau))
    assert t is not None and lo <= t <= hi, t
