"""Step 1: ingest/settings.py keeps the data path's sections; siaga/settings.py gets the rest."""
from pathlib import Path

src = Path("ingest/settings.py").read_text().splitlines(keepends=True)


def lines(first: int, last: int) -> str:  # 1-based, inclusive
    return "".join(src[first - 1:last])


# Where each piece starts at fae309d (unchanged since 6ede815); refuse to cut a changed file.
EXPECTED = {24: "class _Section(", 28: "class MqttSettings(", 72: "class BrokerSettings(",
            82: "class InfluxSettings(", 104: "class IngestSettings(",
            116: "class SpoolSettings(", 120: "class HttpSettings(", 129: "class Settings("}
for number, start in EXPECTED.items():
    assert src[number - 1].startswith(start), f"ingest/settings.py:{number} is not {start}"

ingest = ('"""The data path\'s settings: MQTT, InfluxDB, batching, spool (siaga.settings composes '
          'them)."""\n\nfrom __future__ import annotations\n\n'
          "from pathlib import Path\nfrom typing import Annotated, Literal\n"
          "from urllib.parse import unquote, urlsplit\n\n"
          "from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator\n\n"
          + lines(19, 71) + lines(81, 119).rstrip("\n") + "\n")
siaga = (lines(1, 18).replace(
    "from devices.registry import bundled_catalog_path\n",
    "from devices.registry import bundled_catalog_path\nfrom ingest.settings import (\n"
    "    FilePath,\n    InfluxSettings,\n    IngestSettings,\n    MqttSettings,\n"
    "    SpoolSettings,\n    _Section,\n)\n")
         + "\n\n" + lines(72, 80) + lines(120, len(src)))
Path("ingest/settings.py").write_text(ingest)
Path("siaga/settings.py").write_text(siaga)
