"""Provisioning: `siaga broker init` (the broker's password and ACL files) and `siaga devices
add` (a catalog entry plus a device's broker credentials, and what to flash onto it)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import yaml
from pydantic import ValidationError

from devices.kinds import Kind
from devices.registry import Device, bundled_catalog_path, load_catalog
from devices.topics import TopicScheme
from siaga.broker import auth as brokerauth
from siaga.settings import Settings
from siaga_core.configfile import format_validation_error
from siaga_core.errors import InputError

# A plausible reading per kind, printed as the payload a new device should send.
SAMPLE_FIELDS: Mapping[Kind, dict[str, object]] = {
    Kind.WATER_LEVEL: {"level_cm": 152.0, "battery_v": 12.6},
    Kind.AIR_QUALITY: {"pm25": 35.5, "pm10": 52.0, "temp_c": 30.1, "rh_pct": 74.0},
    Kind.TRAFFIC: {"speed_kmh": 31.5, "volume_vph": 1800, "occupancy_pct": 22.5},
}


class ProvisionError(InputError):
    """A provisioning step refused; the message says what to do instead."""


@dataclass(frozen=True, slots=True)
class NewDevice:
    """What `siaga devices add` was asked for."""

    id: str
    kind: str
    name: str | None = None
    lat: float = 0.0
    lon: float = 0.0
    labels: Mapping[str, str] | None = None


def init_broker(folder: Path, settings: Settings, *, service_user: str,
                force: bool = False) -> dict[str, str]:
    """Write `folder`/siaga.passwd and siaga.acl: the service user and every catalog device.

    Returns the generated passwords (user -> password), to be shown once.
    """
    password_file, acl_file = folder / "siaga.passwd", folder / "siaga.acl"
    existing = [path for path in (password_file, acl_file) if path.exists()]
    if existing and not force:
        raise ProvisionError(f"{existing[0]} exists; add devices with `siaga devices add`, "
                             "or pass --force to replace both files (every password changes)")
    brokerauth.check_user_name(service_user)
    registry = load_catalog(settings.catalog_path)
    if service_user in registry:
        raise ProvisionError(f"service user {service_user!r} is also a device id")
    passwords = {service_user: brokerauth.generate_password()}
    passwords |= {device.id: brokerauth.generate_password() for device in registry}
    folder.mkdir(parents=True, exist_ok=True)
    hashed = {user: brokerauth.hash_password(password) for user, password in passwords.items()}
    brokerauth.write_private(password_file, brokerauth.password_file_text(hashed))
    brokerauth.write_private(acl_file, brokerauth.acl_text(
        settings.mqtt.topic_prefix, service_user=service_user,
        foreign_topics=settings.foreign_topics()))
    return passwords


def add_device(settings: Settings, new: NewDevice) -> tuple[Device, str]:
    """Append `new` to the site catalog and its credentials to the password file.

    Returns the device and its generated password. Nothing is written if either refuses.
    """
    catalog = _site_catalog(settings)
    password_file = settings.broker.password_file
    if password_file is None:
        raise ProvisionError("broker.password_file is not set in the configuration: name "
                             "the password file Mosquitto reads (see `siaga broker init`)")
    device = _validated(new, catalog)
    registry = load_catalog(catalog)
    if device.id in registry:
        raise ProvisionError(f"{catalog}: device {device.id!r} is already in the catalog")
    if device.id in brokerauth.read_password_file(password_file):
        raise ProvisionError(f"{password_file}: {device.id!r} already has a password")
    password = brokerauth.generate_password()
    original = catalog.read_text(encoding="utf-8")
    _append_entry(catalog, original, device)
    try:
        brokerauth.add_users(password_file, {device.id: password})
    except BaseException:
        catalog.write_text(original, encoding="utf-8")
        raise
    return device, password


def _site_catalog(settings: Settings) -> Path:
    bundled = bundled_catalog_path()
    catalog = settings.catalog
    if catalog is None or catalog.resolve() == bundled.resolve():
        raise ProvisionError(
            "the configuration uses the bundled catalog, which is part of the installed "
            f"package and is not edited; copy it and point `catalog:` at the copy:\n"
            f"  cp {bundled} /etc/siaga/devices.yaml\n"
            "  # in your siaga.yaml:  catalog: /etc/siaga/devices.yaml")
    if not catalog.exists():
        raise ProvisionError(f"{catalog}: no such catalog file (create it with `devices: []`)")
    return catalog


def _validated(new: NewDevice, catalog: Path) -> Device:
    entry: dict[str, object] = {"id": new.id, "kind": new.kind, "name": new.name or new.id,
                                "lat": new.lat, "lon": new.lon}
    if new.labels:
        entry["labels"] = dict(new.labels)
    try:
        return Device.model_validate(entry)
    except ValidationError as exc:
        raise format_validation_error(exc, None, model=Device) from None


def _append_entry(catalog: Path, original: str, device: Device) -> None:
    """Append the device to the `devices:` list, keeping the file's comments; the result
    is loaded as a catalog before it replaces the file."""
    entry = device.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    entry.update({"id": device.id, "kind": device.kind.value, "name": device.name})
    block = yaml.safe_dump([entry], sort_keys=False, allow_unicode=True)
    data = yaml.safe_load(original) or {}
    if not isinstance(data, dict) or not data.get("devices"):
        raise ProvisionError(f"{catalog}: expected a `devices:` list with at least one entry "
                             "to append to")
    indented = "".join(f"  {line}\n" for line in block.splitlines())
    separator = "" if original.endswith("\n") else "\n"
    text = f"{original}{separator}\n{indented}"
    temporary = catalog.with_name(f".{catalog.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    try:
        if device.id not in load_catalog(temporary):
            raise ProvisionError(f"{catalog}: the `devices:` list must be the file's last key")
        os.replace(temporary, catalog)
    finally:
        temporary.unlink(missing_ok=True)


def device_url(settings: Settings) -> str:
    """What devices connect to: broker.device_url, else mqtt.url without its credentials."""
    if settings.broker.device_url:
        return settings.broker.device_url
    parts = urlsplit(settings.mqtt.url)
    return f"{parts.scheme}://{parts.hostname}:{settings.mqtt.port}"


def device_sheet(settings: Settings, device: Device, password: str) -> str:
    """Everything the device needs, for its installer; the password is shown only here."""
    topics = TopicScheme(settings.mqtt.topic_prefix)
    sample = orjson.dumps({"ts": "2024-01-31T14:05:00+07:00", "seq": 0,
                           **SAMPLE_FIELDS[device.kind]}).decode()
    return "\n".join([
        f"device {device.id} ({device.kind.value}) added.",
        f"  MQTT URL          {device_url(settings)}",
        f"  username          {device.id}",
        f"  password          {password}   (shown once: it is stored only as a hash)",
        f"  client id         {device.id} (any unique id works)",
        f"  telemetry topic   {topics.telemetry(device.kind, device.id)}   (QoS 1)",
        f"  status topic      {topics.status(device.kind, device.id)}   (retained `online`; "
        "last will: retained `offline`)",
        f"  sample payload    {sample}",
        "Reload the broker so it reads the new password (systemctl reload mosquitto, or "
        "SIGHUP), and restart `siaga run` so the service knows the device.",
    ])

