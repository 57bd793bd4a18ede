"""Transitional: the names moved to server.py, mosquitto.py and influxdb.py (issue 13 step 9)."""

from siaga.sandbox.influxdb import InfluxDB1, VictoriaMetrics
from siaga.sandbox.mosquitto import ADMIN_USER, Mosquitto
from siaga.sandbox.server import LocalServer, ServerNotInstalled, ServerStartError, find_binary

__all__ = ["ADMIN_USER", "InfluxDB1", "LocalServer", "Mosquitto", "ServerNotInstalled",
           "ServerStartError", "VictoriaMetrics", "find_binary"]
