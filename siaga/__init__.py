"""The application: settings, wiring, command line, operator API, broker files, sandbox."""
