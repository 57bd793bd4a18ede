"""What the wheel carries: the shipped files it needs, found beside the code that reads them."""

from pathlib import Path

from siaga.broker.config import MOSQUITTO_CONF

ROOT = Path(__file__).resolve().parents[2]


def test_the_packaged_mosquitto_conf_is_the_top_level_one() -> None:
    top_level = (ROOT / "mosquitto.conf").read_bytes()
    assert MOSQUITTO_CONF.read_bytes() == top_level, (
        "siaga/broker/mosquitto.conf differs from mosquitto.conf; after editing the top-level "
        "file run: cp mosquitto.conf siaga/broker/mosquitto.conf"
    )
