"""The shipped mosquitto.conf moved to a local port and folder, and how to knock on its door."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

# The broker configuration the project ships (see its header): tests run this very file.
# A byte-identical copy of the top-level mosquitto.conf (the file people read and edit), shipped
# as package data so an installed wheel finds it; tests/siaga/test_packaging.py keeps them equal.
MOSQUITTO_CONF = Path(__file__).with_name("mosquitto.conf")
PASSWORD_FILE = "siaga.passwd"  # the names adapted configurations use inside their folder
ACL_FILE = "siaga.acl"


@dataclass(frozen=True, slots=True)
class TlsListener:
    """The shipped (commented) TLS listener, enabled on `port` with this certificate."""

    port: int
    certfile: Path
    keyfile: Path


def adapt_mosquitto_config(text: str, port: int, data_dir: Path, *, as_root: bool,
                           tls: TlsListener | None = None) -> str:
    """The shipped mosquitto.conf with only its ports and paths moved to `data_dir`.

    Every other line is kept verbatim, so the tests exercise the configuration we ship.
    With `tls`, the commented TLS listener block is enabled on its port and files.
    """
    listener = re.compile(r"^\s*listener\s+1883\b.*$")
    commented = re.compile(r"^#(listener\s+8883|certfile|keyfile)\b")
    paths = {"persistence_location": f"{data_dir}/",  # mosquitto appends the file name as is
             "password_file": str(data_dir / PASSWORD_FILE),
             "acl_file": str(data_dir / ACL_FILE)}
    adapted, found_listener = [], False
    for line in text.splitlines():
        key = line.split(maxsplit=1)[0] if line.strip() else ""
        tls_line = commented.match(line)
        if listener.match(line):
            line, found_listener = f"listener {port} 127.0.0.1", True
        elif key in paths:
            line = f"{key} {paths[key]}"
        elif key == "log_dest" and line.split()[1:2] == ["file"]:
            line = f"log_dest file {data_dir / 'mosquitto.log'}"
        elif key == "pid_file":
            continue
        elif tls is not None and tls_line is not None:
            line = {"certfile": f"certfile {tls.certfile}", "keyfile": f"keyfile {tls.keyfile}"
                    }.get(tls_line.group(1), f"listener {tls.port} 127.0.0.1")
        adapted.append(line)
    if not found_listener:
        raise ValueError("mosquitto.conf has no `listener 1883` line to move to a free port")
    if as_root:
        # Started as root, mosquitto switches to user `mosquitto`, which cannot write into
        # a private data directory (pytest's tmp dirs are 0700).
        adapted.append("user root")
    return "\n".join(adapted) + "\n"


def connect_packet(client_id: str, username: str | None = None,
                   password: str | None = None) -> bytes:
    """An MQTT 3.1.1 CONNECT (clean session, keepalive 60 s), for probes and raw tests."""
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    payload = b"".join(_string(value) for value in (client_id, username, password)
                       if value is not None)
    variable = b"\x00\x04MQTT\x04" + bytes([flags]) + b"\x00\x3c" + payload
    return b"\x10" + remaining_length(len(variable)) + variable


def _string(value: str) -> bytes:
    encoded = value.encode()
    return struct.pack(">H", len(encoded)) + encoded


def remaining_length(length: int) -> bytes:
    """MQTT's variable-length encoding of a packet's remaining length."""
    encoded = bytearray()
    while True:
        length, digit = divmod(length, 128)
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(encoded)
