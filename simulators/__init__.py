"""Simulated Jakarta devices: seeded behaviours, scenarios, faults, and runners over MQTT.

Use as a library, without a broker::

    simulation = Simulation(registry, load_scenario("flood-2020-01-01"), seed=1)
    for emission in simulation.emissions():   # in simulated time order
        emission.topic, emission.payload, emission.fault

or published::

    fleet = playback(registry, scenario, FleetConfig(address, speed=3600), seed=1)
    summary = await fleet.run()            # scenario playback, one connection per device

    run = LoadRun(synthetic_devices(5000), LoadConfig(address, rate=20_000, duration_s=60))
    summary = await run.run()              # load mode, one shared connection
"""

from simulators.behaviours import AirMonitor, Behaviour, Gauge, behaviour_for
from simulators.connection import BrokerAddress, Connection
from simulators.emission import Emission
from simulators.errors import BrokerUnavailable, SimulatorError
from simulators.faults import FAULT_NAMES, Fault, FaultRates
from simulators.fleet import Fleet, FleetConfig, FleetConfigError
from simulators.load import LoadConfig, LoadRun, synthetic_devices, write_catalog
from simulators.pacing import Pacer, SystemClock, WallClock
from simulators.roads import Road
from simulators.runner import placed, playback
from simulators.scenario import (
    DeviceSelection,
    Scenario,
    ScenarioError,
    list_scenarios,
    load_scenario,
)
from simulators.simulation import Simulation
from simulators.summary import Count, Summary
from simulators.world import World

__all__ = [
    "FAULT_NAMES",
    "AirMonitor",
    "Behaviour",
    "BrokerAddress",
    "BrokerUnavailable",
    "Connection",
    "Count",
    "DeviceSelection",
    "Emission",
    "Fault",
    "FaultRates",
    "Fleet",
    "FleetConfig",
    "FleetConfigError",
    "Gauge",
    "LoadConfig",
    "LoadRun",
    "Pacer",
    "Road",
    "Scenario",
    "ScenarioError",
    "Simulation",
    "SimulatorError",
    "Summary",
    "SystemClock",
    "WallClock",
    "World",
    "behaviour_for",
    "list_scenarios",
    "load_scenario",
    "placed",
    "playback",
    "synthetic_devices",
    "write_catalog",
]
