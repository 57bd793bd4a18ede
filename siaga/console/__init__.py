"""The monitoring room's console (SPEC section 8): the page at `GET /` and its live feed.

A layer between the application and the API: it reads what the service holds (catalog,
latest readings, alert book, residents' reports) and InfluxDB's history, and never changes
anything itself; acknowledging and silencing go through the API with the operator's token.
"""
