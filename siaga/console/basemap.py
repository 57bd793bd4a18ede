"""The console's offline base map: rivers drawn from the catalog's gauges, and kota labels.

Nothing is fetched: a city's catalog and rules already say where its gauges are and which
lead to which (the flood-wave links), so the rivers are drawn from them, schematically:
one line per river through its gauges, upstream to downstream. A gauge without a link
takes its place by latitude, south to north, as Jakarta's rivers flow to the Java Sea; a
link between gauges of two river labels joins them into one line (Krukut into the Banjir
Kanal Barat at Karet). A river with one gauge is a point, and a gauge on the sea is left
out. Each kota gets a label at the centroid of its devices.

No administrative outline ships (data/SOURCES.md says why); every feature carries
`properties.layer`: `river`, `label` (or `outline`, once one ships).
"""

from __future__ import annotations

import heapq
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from devices.kinds import Kind
from devices.registry import Device, Registry
from rules.config import RulesFile
from rules.ruletypes import FloodWaveRule
from siaga.api.context import CONTEXT, json_response
from siaga.console.context import CONSOLE

RIVER_LABEL: Final = "river"
KOTA_LABEL: Final = "kota"
# A coastal gauge (Pasar Ikan's tide gauge) is labelled with its sea: not a river to draw.
_SEA: Final = re.compile(r"\b(sea|laut|teluk|bay|harbou?r|pelabuhan)\b", re.IGNORECASE)

Feature = dict[str, Any]


def links(rules_file: RulesFile) -> list[tuple[str, str]]:
    """(upstream, downstream) gauge ids of the rules file's flood-wave rules."""
    return [(rule.upstream, downstream.device) for rule in rules_file.rules
            if isinstance(rule, FloodWaveRule) for downstream in rule.downstream]


def rivers(registry: Registry, flows: Iterable[tuple[str, str]]) -> list[Feature]:
    """One feature per river: a LineString through its gauges upstream first (a Point for a
    river of one gauge), with `{layer: river, river, gauges}`."""
    gauges = {device.id: device for device in registry.by_kind(Kind.WATER_LEVEL)
              if device.labels.get(RIVER_LABEL) and not _SEA.search(device.labels[RIVER_LABEL])}
    edges = [(up, down) for up, down in flows if up in gauges and down in gauges and up != down]
    features = []
    for group in _joined(gauges, edges):
        ordered = _upstream_first(group, gauges, edges)
        names = list(dict.fromkeys(gauges[i].labels[RIVER_LABEL] for i in ordered))
        coordinates = [[gauges[i].lon, gauges[i].lat] for i in ordered]
        geometry = ({"type": "Point", "coordinates": coordinates[0]} if len(ordered) == 1
                    else {"type": "LineString", "coordinates": coordinates})
        features.append(_feature(geometry, layer="river", river=" / ".join(names),
                                 gauges=ordered))
    return features


def kota_labels(devices: Iterable[Device]) -> list[Feature]:
    """A Point per `kota` label at the centroid of its devices, with `{layer: label, kota}`."""
    places: dict[str, list[Device]] = defaultdict(list)
    for device in devices:
        kota = device.labels.get(KOTA_LABEL)
        if kota:
            places[kota].append(device)
    return [
        _feature({"type": "Point", "coordinates": [
            round(sum(d.lon for d in members) / len(members), 6),
            round(sum(d.lat for d in members) / len(members), 6)]},
            layer="label", kota=kota)
        for kota, members in sorted(places.items())
    ]


def base_map(registry: Registry, rules_file: RulesFile) -> dict[str, Any]:
    """The GeoJSON FeatureCollection the page draws under its markers."""
    return {"type": "FeatureCollection",
            "features": [*rivers(registry, links(rules_file)), *kota_labels(registry)]}


def routes() -> list[web.RouteDef]:
    return [web.get("/console/api/basemap", get_basemap)]


async def get_basemap(request: web.Request) -> web.Response:
    """`GET /console/api/basemap`: the base map as GeoJSON (the catalog's, so it never changes
    while the service runs)."""
    collection = base_map(request.app[CONTEXT].registry, request.app[CONSOLE].rules)
    return json_response(collection)


def _feature(geometry: Mapping[str, Any], **properties: Any) -> Feature:
    return {"type": "Feature", "geometry": dict(geometry), "properties": properties}


def _joined(gauges: Mapping[str, Device], edges: Sequence[tuple[str, str]]) -> list[list[str]]:
    """Gauges grouped by river label, and groups a link joins merged (union-find); in the
    catalog's order of their first gauge."""
    parent = {gauge_id: gauge_id for gauge_id in gauges}

    def root(gauge_id: str) -> str:
        while parent[gauge_id] != gauge_id:
            parent[gauge_id] = parent[parent[gauge_id]]
            gauge_id = parent[gauge_id]
        return gauge_id

    first_of_river: dict[str, str] = {}
    for gauge_id, device in gauges.items():
        first = first_of_river.setdefault(device.labels[RIVER_LABEL], gauge_id)
        parent[root(gauge_id)] = root(first)
    for up, down in edges:
        parent[root(down)] = root(up)
    groups: dict[str, list[str]] = defaultdict(list)
    for gauge_id in gauges:
        groups[root(gauge_id)].append(gauge_id)
    return list(groups.values())


def _upstream_first(group: Sequence[str], gauges: Mapping[str, Device],
                    edges: Sequence[tuple[str, str]]) -> list[str]:
    """The group's gauges in flow order: links first (a topological order), and among the
    gauges free to come next, the southernmost (rivers here flow north to the sea)."""
    members = set(group)
    below: dict[str, list[str]] = defaultdict(list)
    waiting = dict.fromkeys(group, 0)
    for up, down in edges:
        if up in members and down in members:
            below[up].append(down)
            waiting[down] += 1
    ready = [(gauges[i].lat, i) for i in group if waiting[i] == 0]
    heapq.heapify(ready)
    ordered: list[str] = []
    while ready:
        _, gauge_id = heapq.heappop(ready)
        ordered.append(gauge_id)
        for down in below[gauge_id]:
            waiting[down] -= 1
            if waiting[down] == 0:
                heapq.heappush(ready, (gauges[down].lat, down))
    # Links in a circle (a rules file's mistake) leave gauges waiting: by latitude, then.
    rest = sorted((i for i in group if i not in set(ordered)), key=lambda i: gauges[i].lat)
    return ordered + rest
