"""The report book: residents' reports (Open311 GeoReport v2), officers' follow-up, statistics."""
