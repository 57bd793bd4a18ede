"""Mosquitto's password file and ACL file for Siaga: who may connect, and publish or read what.

Who is who at the broker (the ACL this module writes):

- a device's user name is its device id: it may publish to its own `telemetry` and
  `status` topics (`{prefix}/+/{device_id}/...`, one `pattern` line with `%u` for every
  device) and read nothing;
- the service's user (`siaga.service` by default: a dot can never be in a device id, so no
  device can take its name) reads every device's telemetry and status and writes nothing
  of its own;
- optionally, a simulator user may publish anything under the prefix (`siaga simulate`
  with one shared set of credentials; not for real devices).

The prefix is written into the ACL file: after changing `mqtt.topic_prefix`, run
`siaga broker init` again (or edit the file's topic lines).

Passwords are stored as Mosquitto 2.0 hashes (`$7$`: PBKDF2-SHA512), the format
`mosquitto_passwd` writes; this module computes them itself, so no Mosquitto tools are
needed where `siaga devices add` runs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from siaga.broker.config import ACL_FILE, PASSWORD_FILE

SERVICE_USER = "siaga.service"
SIMULATOR_USER = "siaga.simulators"
# Mosquitto 2.0's own choices for `$7$` hashes: 101 PBKDF2 rounds over a 12-byte salt.
# The rounds are few, so the passwords must be long random strings, never chosen by people.
PBKDF2_ROUNDS = 101
SALT_BYTES = 12
PASSWORD_BYTES = 24  # 192 random bits: 32 URL-safe characters
NEW_FILE_MODE = 0o640  # owner writes, group `mosquitto` (chgrp it) reads, others nothing


def generate_password() -> str:
    """A random password for a device or service (URL-safe: it goes into mqtt:// URLs)."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def hash_password(password: str, *, salt: bytes | None = None,
                  rounds: int = PBKDF2_ROUNDS) -> str:
    """Mosquitto 2.0's `$7$<rounds>$<base64 salt>$<base64 PBKDF2-SHA512>`."""
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, rounds)
    return f"$7${rounds}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def password_matches(password: str, hashed: str) -> bool:
    """Whether `password` is the one `hashed` (a `$7$` hash) was made from."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    rounds, salt, digest = int(parts[2]), base64.b64decode(parts[3]), base64.b64decode(parts[4])
    computed = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, rounds)
    return hmac.compare_digest(computed, digest)


def check_user_name(name: str) -> None:
    """Refuse what Mosquitto's files cannot hold, or its `%u` patterns would misuse."""
    if not name or ":" in name or any(c in name for c in "+#/ \t\r\n"):
        raise ValueError(f"user name {name!r}: must be non-empty, without ':', '/', "
                         "'+', '#' or whitespace")


def read_password_file(path: Path) -> dict[str, str]:
    """User name -> hash, in file order; a missing file is empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    entries: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, hashed = line.partition(":")
            entries[name] = hashed
    return entries


def password_file_text(entries: Mapping[str, str]) -> str:
    return "".join(f"{name}:{hashed}\n" for name, hashed in entries.items())


def add_users(path: Path, passwords: Mapping[str, str], *, replace: bool = False) -> None:
    """Add users (name -> clear password) to the password file, hashed; atomically.

    Refuses a user already there unless `replace` (a password change).
    """
    entries = read_password_file(path)
    taken = [name for name in passwords if name in entries]
    if taken and not replace:
        raise ValueError(f"{path}: already has a password for {', '.join(taken)}")
    for name, password in passwords.items():
        check_user_name(name)
        entries[name] = hash_password(password)
    write_private(path, password_file_text(entries))


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically, keeping its mode (new files: NEW_FILE_MODE)."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = NEW_FILE_MODE
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, mode)  # the umask may have narrowed it
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def acl_text(prefix: str, *, service_user: str = SERVICE_USER,
             simulator_user: str | None = None, foreign_topics: Iterable[str] = (),
             extra: Iterable[str] = ()) -> str:
    """The ACL file: the service reads, each device writes its own topics, nobody else;
    the service reads the `foreign_topics` too (Frigate's, a LoRaWAN server's: who
    publishes there is that system's user, the site's to grant)."""
    lines = [
        "# Siaga broker ACL (Mosquitto acl_file), written by `siaga broker init`.",
        f"# Topic prefix: {prefix}. Anything not granted here is refused.",
        "",
        "# Devices: user name = device id; each publishes only to its own telemetry and",
        "# status topics (its last will included) and reads nothing.",
        f"pattern write {prefix}/+/%u/telemetry",
        f"pattern write {prefix}/+/%u/status",
        "# Cameras also publish their detections (SPEC section 7).",
        f"pattern write {prefix}/camera/%u/events",
        "",
        "# The service: reads every device's telemetry and status, and cameras' events.",
        f"user {service_user}",
        f"topic read {prefix}/+/+/telemetry",
        f"topic read {prefix}/+/+/status",
        f"topic read {prefix}/camera/+/events",
    ]
    lines += [f"topic read {topic}" for topic in foreign_topics]
    if simulator_user is not None:
        lines += ["", "# The simulators (`siaga simulate`): publish as any device.",
                  f"user {simulator_user}", f"topic write {prefix}/#"]
    return "\n".join([*lines, *extra]) + "\n"


def write_local_files(folder: Path, passwords: Mapping[str, str], prefix: str,
                      admin_user: str) -> None:
    """A local broker's password and ACL files: the service, the simulators, `admin_user`
    (everything: test tooling) and devices, as adapt_mosquitto_config names them."""
    hashed = {user: hash_password(password) for user, password in passwords.items()}
    write_private(folder / PASSWORD_FILE, password_file_text(hashed))
    admin = ["", "# Test tooling (local brokers only): everything.",
             f"user {admin_user}", "topic readwrite #"]
    write_private(folder / ACL_FILE, acl_text(prefix, simulator_user=SIMULATOR_USER,
                                              extra=admin))
