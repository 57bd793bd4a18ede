"""The operator HTTP API (aiohttp), its Prometheus text and its OpenAPI description."""
