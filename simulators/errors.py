"""Errors of the simulators: one root, so callers catch the package with one clause.

    SimulatorError
    └── BrokerUnavailable   the broker refused or never answered the connection
"""


class SimulatorError(Exception):
    """Root of every error the simulators raise."""


class BrokerUnavailable(SimulatorError):
    """The MQTT broker could not be reached or refused the connection."""
