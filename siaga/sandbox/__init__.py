"""Local Mosquitto, InfluxDB 1.x and VictoriaMetrics for the demo, tests and benchmarks."""
