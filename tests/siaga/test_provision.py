"""Broker credentials: Mosquitto's hash format, `siaga broker init`, `siaga devices add`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from devices.registry import bundled_catalog_path, load_catalog
from siaga.broker import auth as brokerauth
from siaga.broker.provision import NewDevice, ProvisionError, add_device, device_sheet, init_broker
from siaga.cli.main import main
from siaga.settings import load_settings
from siaga_core.errors import ConfigFileError

SECRET = "s3cret-Pa55word"


def site(tmp_path: Path, extra: str = "") -> Path:
    """A site configuration with a copy of the bundled catalog and broker files beside it."""
    shutil.copy(bundled_catalog_path(), tmp_path / "devices.yaml")
    config = tmp_path / "siaga.yaml"
    config.write_text(f"mqtt:\n  url: mqtt://siaga.service:{SECRET}@broker.example:1883\n"
                      "catalog: devices.yaml\n"
                      "broker:\n  password_file: broker/siaga.passwd\n"
                      f"  acl_file: broker/siaga.acl\n{extra}")
    (tmp_path / "broker").mkdir()
    return config


def test_a_siaga_hash_is_verified_like_mosquittos_own() -> None:
    hashed = brokerauth.hash_password(SECRET)
    assert hashed.startswith("$7$101$")
    assert brokerauth.password_matches(SECRET, hashed)
    assert not brokerauth.password_matches(SECRET + "x", hashed)


def test_siaga_reads_the_hashes_mosquitto_passwd_writes(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd", path="/usr/bin:/usr/sbin:/bin")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    path = tmp_path / "passwd"
    subprocess.run([tool, "-c", "-b", str(path), "alice", SECRET], check=True)
    assert brokerauth.password_matches(SECRET, brokerauth.read_password_file(path)["alice"])


def test_adding_a_device_appends_its_entry_and_its_hashed_password(tmp_path: Path) -> None:
    settings = load_settings(site(tmp_path))
    before = (tmp_path / "devices.yaml").read_text()
    device, password = add_device(settings, NewDevice(
        "pa-baru", "water-level", "Pos Baru", -6.2, 106.8, {"river": "Ciliwung"}))
    after = (tmp_path / "devices.yaml").read_text()
    assert after.startswith(before)  # comments and entries kept as they were
    assert load_catalog(tmp_path / "devices.yaml").get("pa-baru") == device
    stored = brokerauth.read_password_file(tmp_path / "broker" / "siaga.passwd")
    assert brokerauth.password_matches(password, stored["pa-baru"])
    assert password not in (tmp_path / "broker" / "siaga.passwd").read_text()


def test_the_device_sheet_has_the_url_without_the_services_password(tmp_path: Path) -> None:
    settings = load_settings(site(tmp_path))
    device, password = add_device(settings, NewDevice("aq-baru", "air-quality"))
    sheet = device_sheet(settings, device, password)
    assert "mqtt://broker.example:1883" in sheet
    assert "siaga/air-quality/aq-baru/telemetry" in sheet
    assert "siaga/air-quality/aq-baru/status" in sheet
    assert password in sheet and SECRET not in sheet


def test_a_device_already_in_the_catalog_is_refused_and_nothing_changes(
    tmp_path: Path,
) -> None:
    settings = load_settings(site(tmp_path))
    before = (tmp_path / "devices.yaml").read_text()
    with pytest.raises(ProvisionError, match="'manggarai' is already in the catalog"):
        add_device(settings, NewDevice("manggarai", "water-level"))
    assert (tmp_path / "devices.yaml").read_text() == before
    assert not (tmp_path / "broker" / "siaga.passwd").exists()


def test_an_invalid_device_id_is_a_configuration_error(tmp_path: Path) -> None:
    settings = load_settings(site(tmp_path))
    with pytest.raises(ConfigFileError, match="id: must match"):
        add_device(settings, NewDevice("Not/Valid", "water-level"))


def test_the_bundled_catalog_is_never_edited(tmp_path: Path) -> None:
    config = tmp_path / "siaga.yaml"
    config.write_text("broker:\n  password_file: siaga.passwd\n")
    with pytest.raises(ProvisionError, match=r"bundled catalog.*\n  cp "):
        add_device(load_settings(config), NewDevice("pa-baru", "water-level"))


def test_broker_init_writes_the_service_and_every_catalog_device(tmp_path: Path) -> None:
    settings = load_settings(site(tmp_path))
    passwords = init_broker(tmp_path / "broker", settings, service_user="siaga.service")
    stored = brokerauth.read_password_file(tmp_path / "broker" / "siaga.passwd")
    assert set(stored) == {"siaga.service", *(d.id for d in load_catalog(settings.catalog_path))}
    assert all(brokerauth.password_matches(passwords[user], stored[user]) for user in stored)
    acl = (tmp_path / "broker" / "siaga.acl").read_text()
    assert "pattern write siaga/+/%u/telemetry" in acl
    assert "user siaga.service\ntopic read siaga/+/+/telemetry" in acl
    with pytest.raises(ProvisionError, match="exists"):
        init_broker(tmp_path / "broker", settings, service_user="siaga.service")


def test_the_service_may_read_the_topics_of_the_inputs_enabled_and_no_others(
    tmp_path: Path,
) -> None:
    enabled = ("frigate:\n  enabled: true\n  cameras: {gerbang: cam-manggarai}\n"
               "lorawan:\n  chirpstack: {enabled: true}\n")
    settings = load_settings(site(tmp_path, enabled))
    init_broker(tmp_path / "broker", settings, service_user="siaga.service")
    acl = (tmp_path / "broker" / "siaga.acl").read_text()
    service_part = acl.split("user siaga.service\n", 1)[1]
    assert "topic read frigate/events\n" in service_part
    assert "topic read application/+/device/+/event/up\n" in service_part
    assert "v3/" not in acl  # The Things Stack stays off


def test_broker_paths_are_relative_to_the_configuration_file(tmp_path: Path) -> None:
    settings = load_settings(site(tmp_path))
    assert settings.broker.password_file == tmp_path / "broker" / "siaga.passwd"
    assert settings.broker.acl_file == tmp_path / "broker" / "siaga.acl"


def test_siaga_check_does_not_print_passwords(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = site(tmp_path, f"influx:\n  url: http://reader:{SECRET}@db.example:8086\n")
    assert main(["check", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert "user siaga.service" in out and "http://reader:***@db.example:8086" in out
    assert SECRET not in out


def test_a_configuration_error_does_not_echo_a_urls_password(tmp_path: Path) -> None:
    config = tmp_path / "siaga.yaml"
    config.write_text(f"mqtt:\n  qos: 'mqtt://dev:{SECRET}@host:1883'\n")
    with pytest.raises(ConfigFileError) as error:
        load_settings(config)
    assert "mqtt://dev:***@host:1883" in str(error.value)
    assert SECRET not in str(error.value)


def test_a_device_add_over_the_command_line_prints_the_sheet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = site(tmp_path)
    assert main(["devices", "add", "tr-baru", "--kind", "traffic", "--label", "road=Jl. Baru",
                 "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert "username          tr-baru" in out
    assert load_catalog(tmp_path / "devices.yaml").tags("tr-baru")["road"] == "Jl. Baru"
