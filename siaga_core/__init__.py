"""Shared ground under every package: the error tree, config files with file:line errors, the
SQLite store base, paho on asyncio, redaction. Imports nothing of ours."""
