"""Step 1: StatusUpdate (a device's status message) moves from ingest/decode.py to devices/readings.py."""
from pathlib import Path

decode = Path("ingest/decode.py")
src = decode.read_text()
start = src.index("@dataclass(frozen=True, slots=True)\nclass StatusUpdate:")
end = src.index("@dataclass(slots=True)\nclass Decoded:")
block = src[start:end].rstrip() + "\n"
src = src[:start] + src[end:]
src = src.replace("from devices.readings import READING_VALIDATORS, Reading, explain, to_reading",
                  "from devices.readings import READING_VALIDATORS, Reading, StatusUpdate, explain, "
                  "to_reading")
decode.write_text(src)
readings = Path("devices/readings.py")
text = readings.read_text().replace("from collections.abc import Callable, Mapping\n",
                                    "from collections.abc import Callable, Mapping\n"
                                    "from dataclasses import dataclass\n", 1)
readings.write_text(text.rstrip() + "\n\n\n" + block)
