"""Receivers and routes: validation at load, and picking receivers by label matchers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from rules.routing import DEFAULT_RECEIVER, Receiver, Route, Router, route_problems

FLOOD_CRITICAL = {"alertname": "FloodLevel", "kind": "water-level", "severity": "critical",
                  "level": "siaga-1", "device_id": "pa-manggarai"}
FLOOD_WARNING = {**FLOOD_CRITICAL, "severity": "warning", "level": "siaga-3"}
CONGESTION_CRITICAL = {"alertname": "Congestion", "kind": "traffic", "severity": "critical",
                       "device_id": "tr-sudirman"}


def receiver(name: str) -> Receiver:
    return Receiver(name=name, url=f"https://{name}.example/hook")


def city_router(extra_url: str | None = None) -> Router:
    """The issue's example: floods to the disaster agency, congestion to the transport
    agency, everything critical to the monitoring room."""
    receivers = [receiver("bpbd"), receiver("dishub"), receiver("monitoring")]
    routes = [
        Route(receivers=["bpbd"], match={"kind": "water-level"}),
        Route(receivers=["dishub"], match={"alertname": "Congestion"}),
        Route(receivers=["monitoring"], match={"severity": "critical"}),
    ]
    return Router(receivers, routes, extra_url)


def names(receivers: list[Receiver]) -> list[str]:
    return [r.name for r in receivers]


def test_a_critical_flood_goes_to_every_matching_route() -> None:
    assert names(city_router().receivers_for(FLOOD_CRITICAL)) == ["bpbd", "monitoring"]


def test_a_warning_flood_goes_only_to_the_disaster_agency() -> None:
    assert names(city_router().receivers_for(FLOOD_WARNING)) == ["bpbd"]


def test_critical_congestion_goes_to_transport_and_monitoring() -> None:
    assert names(city_router().receivers_for(CONGESTION_CRITICAL)) == ["dishub", "monitoring"]


def test_labels_no_route_matches_go_nowhere() -> None:
    assert city_router().receivers_for({"alertname": "AirQuality", "severity": "major"}) == []


def test_a_receiver_named_by_several_matching_routes_gets_it_once_in_first_order() -> None:
    router = Router(
        [receiver("a"), receiver("b")],
        [Route(receivers=["b", "a"], match={"kind": "traffic"}),
         Route(receivers=["a"], match={"severity": "critical"}),
         Route(receivers=["b"])],
    )
    assert names(router.receivers_for(CONGESTION_CRITICAL)) == ["b", "a"]


def test_a_route_without_matchers_takes_every_alert() -> None:
    router = Router([receiver("all")], [Route(receivers=["all"])])
    assert names(router.receivers_for({})) == ["all"]


def test_every_matcher_of_a_route_must_match() -> None:
    route = Route(receivers=["bpbd"], match={"kind": "water-level", "severity": "critical"})
    router = Router([receiver("bpbd")], [route])
    assert names(router.receivers_for(FLOOD_CRITICAL)) == ["bpbd"]
    assert router.receivers_for(FLOOD_WARNING) == []


def test_regex_matchers_are_anchored_at_both_ends() -> None:
    router = Router([receiver("high")],
                    [Route(receivers=["high"], match_re={"level": "siaga-[12]"})])
    assert names(router.receivers_for({"level": "siaga-1"})) == ["high"]
    assert router.receivers_for({"level": "siaga-10"}) == []
    assert router.receivers_for({"level": "xsiaga-1"}) == []
    assert router.receivers_for({"level": "siaga-3"}) == []


def test_a_missing_label_matches_as_the_empty_string() -> None:
    router = Router([receiver("unlevelled")],
                    [Route(receivers=["unlevelled"], match={"level": ""})])
    assert names(router.receivers_for({"alertname": "DeviceOffline"})) == ["unlevelled"]
    assert router.receivers_for(FLOOD_CRITICAL) == []


def test_the_webhook_url_receiver_gets_every_notification_after_the_routed_ones() -> None:
    router = city_router("https://ops.example/all")
    chosen = router.receivers_for(FLOOD_CRITICAL)
    assert names(chosen) == ["bpbd", "monitoring", DEFAULT_RECEIVER]
    assert chosen[-1].url == "https://ops.example/all"
    assert names(router.receivers_for({"alertname": "Whatever"})) == [DEFAULT_RECEIVER]
    assert router.receiver(DEFAULT_RECEIVER) is chosen[-1]


def test_receivers_told_before_are_added_once_and_only_while_configured() -> None:
    router = city_router("https://siaga-sink.example/")
    told = {"monitoring", "bpbd", "removed-by-a-reload", DEFAULT_RECEIVER}
    assert names(router.receivers_for(FLOOD_WARNING, also=told)) == [
        "bpbd", "monitoring", DEFAULT_RECEIVER]


def test_the_webhook_url_cannot_clash_with_a_receiver_named_default() -> None:
    with pytest.raises(ValueError, match="already has one"):
        Router([receiver(DEFAULT_RECEIVER)], [], "https://ops.example/all")


def test_a_route_to_an_unknown_receiver_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown receivers: nobody"):
        Router([receiver("a")], [Route(receivers=["a", "nobody"])])


def test_route_problems_name_duplicates_and_unknown_receivers_with_their_places() -> None:
    problems = list(route_problems(
        [receiver("a"), receiver("b"), receiver("a")],
        [Route(receivers=["a"]), Route(receivers=["b", "c"])],
    ))
    assert problems == [
        (("receivers", 2, "name"), "duplicate receiver 'a': receivers[0] has it too"),
        (("routes", 1, "receivers", 1), "unknown receiver 'c' (receivers: a, b)"),
    ]


def test_a_receiver_has_sensible_defaults() -> None:
    plain = receiver("a")
    assert plain.secret is None
    assert plain.timeout_s == 10
    assert plain.headers == {}
    assert plain.max_age == timedelta(hours=24)


def test_a_receiver_reads_durations_and_hides_its_secret() -> None:
    configured = Receiver.model_validate({
        "name": "bpbd", "url": "https://bpbd.example/hook", "secret": "s3cret",
        "timeout_s": 5, "headers": {"Authorization": "Bearer t"}, "max_age": "6h",
    })
    assert configured.max_age == timedelta(hours=6)
    assert configured.secret is not None
    assert configured.secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(configured)


@pytest.mark.parametrize("url", ["ftp://x.example/", "bpbd.example/hook", "http:///path", ""])
def test_a_receiver_url_must_be_http_or_https_with_a_host(url: str) -> None:
    with pytest.raises(ValidationError, match="http:// or https://"):
        Receiver(name="a", url=url)


@pytest.mark.parametrize("header", ["X-Siaga-Signature", "x-siaga-delivery", "Content-Type"])
def test_extra_headers_cannot_replace_the_ones_siaga_sets(header: str) -> None:
    with pytest.raises(ValidationError, match="set by Siaga"):
        Receiver(name="a", url="https://a.example/", headers={header: "forged"})


def test_an_extra_header_value_must_be_one_line() -> None:
    with pytest.raises(ValidationError, match="one line"):
        Receiver(name="a", url="https://a.example/", headers={"X-Team": "a\r\nX-Evil: 1"})


@pytest.mark.parametrize("field", [{"timeout_s": 0}, {"max_age": "0s"}, {"colour": "red"}])
def test_a_receiver_refuses_bad_or_unknown_fields(field: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Receiver.model_validate({"name": "a", "url": "https://a.example/", **field})


def test_a_route_needs_at_least_one_receiver() -> None:
    with pytest.raises(ValidationError):
        Route(receivers=[])


def test_a_bad_regex_is_refused_at_load_with_its_label() -> None:
    with pytest.raises(ValidationError, match="level: 'siaga-\\[12' is not a regular expression"):
        Route(receivers=["a"], match_re={"level": "siaga-[12"})


def test_a_matcher_needs_a_label_name() -> None:
    with pytest.raises(ValidationError, match="not a label name"):
        Route(receivers=["a"], match={"device-id": "x"})


def test_models_are_frozen() -> None:
    with pytest.raises(ValidationError):
        receiver("a").url = "https://elsewhere.example/"
