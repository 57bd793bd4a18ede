"""Simulated Jakarta devices: seeded behaviours per kind and a fleet runner publishing over MQTT.

Use as a library::

    fleet = Fleet(registry, FleetConfig(port=1883, rate=200, duration_s=10, seed=1))
    summary = await fleet.run()

or, without a broker, `generate(registry, count, seed, start_s)` yields the same
(topic, reading) pairs the fleet would publish.
"""

from simulators.behaviours import AirQuality, Behaviour, Traffic, WaterLevel, behaviour_for
from simulators.clock import Clock, SimClock
from simulators.connection import BrokerAddress, SharedConnection
from simulators.errors import BrokerUnavailable, SimulatorError
from simulators.fleet import Fleet, FleetConfig, FleetConfigError, FleetSummary
from simulators.simulation import DeviceStream, Payload, Simulation, generate

__all__ = [
    "AirQuality",
    "Behaviour",
    "BrokerAddress",
    "BrokerUnavailable",
    "Clock",
    "DeviceStream",
    "Fleet",
    "FleetConfig",
    "FleetConfigError",
    "FleetSummary",
    "Payload",
    "SharedConnection",
    "SimClock",
    "Simulation",
    "SimulatorError",
    "Traffic",
    "WaterLevel",
    "behaviour_for",
    "generate",
]
