"""What the console's handlers read: one object on the aiohttp application, like the API's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from aiohttp import web

from rules.config import RulesFile
from siaga.settings import ConsoleSettings

if TYPE_CHECKING:
    from siaga.console.hub import ConsoleHub
    from siaga.console.series import InfluxReader


@dataclass(frozen=True, slots=True)
class ConsoleContext:
    """The console's own parts; the catalog, alert book, desk and clock are the API's
    (`siaga.api.context.CONTEXT` on the same application)."""

    settings: ConsoleSettings
    hub: ConsoleHub
    rules: RulesFile  # the flood-wave links draw the rivers; offline intervals date history
    # None when the readings' store has no query language the console reads (the v2 write
    # API of VictoriaMetrics): charts and history answer 501 and say so.
    reader: InfluxReader | None


CONSOLE: Final = web.AppKey("siaga_console", ConsoleContext)
