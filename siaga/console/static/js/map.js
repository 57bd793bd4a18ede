// The map: the offline base (outline, schematic rivers, kota names) or configured tiles, and the
// devices as canvas shapes. Leaflet is the vendored classic script (global L).

import { el } from './dom.js';
import { elevated, look, shapeMarkerClass } from './shapes.js';

const L = window.L;
const EMPTY_IMAGE = '/console/static/empty.gif';
const JAKARTA = [-6.2, 106.85];

// Leaflet's built-in blank image is a data: URL, which img-src 'self' refuses (Leaflet #6113,
// #9363). Setting L.Util.emptyImageUrl is not enough in 1.9.4's bundle (TileLayer reads its
// own copy of the constant), so the tile layer's three uses of it are redone with ours.
L.Util.emptyImageUrl = EMPTY_IMAGE;
const QuietTiles = L.TileLayer.extend({
  _abortLoading() {
    for (const key of Object.keys(this._tiles)) {
      const tile = this._tiles[key];
      if (tile.coords.z === this._tileZoom) continue;
      const image = tile.el;
      image.onload = L.Util.falseFn;
      image.onerror = L.Util.falseFn;
      if (!image.complete) {
        image.src = EMPTY_IMAGE;
        L.DomUtil.remove(image);
        delete this._tiles[key];
        this.fire('tileabort', { tile: image, coords: tile.coords });
      }
    }
  },
  _removeTile(key) {
    const tile = this._tiles[key];
    if (!tile) return undefined;
    tile.el.setAttribute('src', EMPTY_IMAGE);
    return L.GridLayer.prototype._removeTile.call(this, key);
  },
  _tileReady(coords, error, tile) {
    if (!this._map || (tile && tile.getAttribute('src') === EMPTY_IMAGE)) return undefined;
    return L.GridLayer.prototype._tileReady.call(this, coords, error, tile);
  },
});

// Attribution as text: Leaflet's own control writes its strings as HTML.
const TextAttribution = L.Control.extend({
  options: { position: 'bottomright', text: '' },
  onAdd() {
    const node = el('div', { class: 'leaflet-control-attribution map-attribution' }, this.options.text);
    L.DomEvent.disableClickPropagation(node);
    return node;
  },
});

export class DeviceMap {
  constructor(container, { wall = false, onDevice = () => {}, onBackground = () => {} } = {}) {
    this.map = L.map(container, {
      preferCanvas: true,
      zoomControl: !wall,
      attributionControl: false,
      minZoom: 8,
      maxZoom: 18,
      zoomSnap: 0.25,
    }).setView(JAKARTA, 11);
    this.map.createPane('base').style.zIndex = 250;
    this.map.createPane('devicesLow').style.zIndex = 410;
    this.map.createPane('devicesHigh').style.zIndex = 420;
    this.map.createPane('reports').style.zIndex = 620;
    this.ShapeMarker = shapeMarkerClass(L);
    this.markers = new Map();
    this.onDevice = onDevice;
    this.map.on('click', () => onBackground());
    this.baseLoaded = false;
    this.dense = false;
  }

  // Thousands of quiet shapes at full size are a carpet that hides the few that matter: past
  // 2,000 devices quiet ones shrink and fade, elevated ones keep their size.
  setDensity(count) {
    this.dense = count > 2000;
  }

  useTiles(url, attribution) {
    if (this.tiles || !url) return;
    this.tiles = new QuietTiles(url, { maxZoom: 19, crossOrigin: false, referrerPolicy: 'no-referrer' });
    this.tiles.addTo(this.map);
    this.map.getContainer().classList.add('with-tiles');
    if (attribution) new TextAttribution({ text: attribution }).addTo(this.map);
  }

  // The base drawn from /console/api/basemap: outline polygon, schematic rivers, kota labels.
  async loadBase() {
    if (this.baseLoaded) return;
    this.baseLoaded = true;
    let collection;
    try {
      const response = await fetch('/console/api/basemap');
      if (!response.ok) return;
      collection = await response.json();
    } catch {
      return; // no base: the devices still show, on the plain background
    }
    const features = collection.features ?? [];
    const of = (layer) => ({ type: 'FeatureCollection', features: features.filter((f) => f.properties?.layer === layer) });
    L.geoJSON(of('outline'), {
      pane: 'base', interactive: false,
      style: { color: '#3A4B5E', weight: 1.5, fillColor: '#18212C', fillOpacity: 1 },
    }).addTo(this.map);
    L.geoJSON(of('river'), {
      pane: 'base', interactive: false,
      style: { color: '#2D6C95', weight: 2.5, opacity: 0.8, dashArray: '8 5' },
      pointToLayer: (feature, latlng) => L.circleMarker(latlng, {
        pane: 'base', interactive: false, radius: 3, color: '#2D6C95', weight: 1 }),
    }).addTo(this.map);
    for (const feature of of('label').features) {
      const [lon, lat] = feature.geometry?.coordinates ?? [];
      if (typeof lat !== 'number' || typeof lon !== 'number') continue;
      const name = feature.properties.kota ?? feature.properties.name ?? '';
      L.marker([lat, lon], {
        pane: 'base', interactive: false, keyboard: false,
        icon: L.divIcon({ className: 'kota-label', html: el('span', {}, name), iconSize: null }),
      }).addTo(this.map);
    }
    for (const feature of of('river').features) {
      const coordinates = feature.geometry?.coordinates;
      if (feature.geometry?.type !== 'LineString' || !coordinates?.length) continue;
      const [lon, lat] = coordinates[Math.floor(coordinates.length / 2)];
      L.marker([lat, lon], {
        pane: 'base', interactive: false, keyboard: false,
        icon: L.divIcon({ className: 'river-label', html: el('span', {}, feature.properties.river ?? ''), iconSize: null }),
      }).addTo(this.map);
    }
  }

  // Add, restyle or (with `keep`) remove devices; a status change restyles one shape.
  upsert(device) {
    const existing = this.markers.get(device.id);
    if (typeof device.lat !== 'number' || typeof device.lon !== 'number') return;
    if (!existing) {
      const marker = new this.ShapeMarker([device.lat, device.lon], this.options(device));
      marker.deviceId = device.id;
      marker.kind = device.kind;
      marker.status = device.status;
      marker.on('click', (event) => {
        L.DomEvent.stopPropagation(event);
        this.onDevice(device.id);
      });
      marker.addTo(this.map);
      this.markers.set(device.id, marker);
      return;
    }
    this.setStatus(device.id, device.status);
  }

  setStatus(id, status) {
    const marker = this.markers.get(id);
    if (!marker || marker.status === status) return;
    const movePane = elevated(marker.status) !== elevated(status);
    marker.status = status;
    const options = this.options({ kind: marker.kind, status });
    if (movePane) {
      // Elevated shapes live on their own canvas above the rest, so a siaga-1 gauge is never
      // hidden under a thousand quiet ones.
      marker.remove();
      L.setOptions(marker, options);
      marker.addTo(this.map);
    } else {
      L.setOptions(marker, { shape: options.shape, label: options.label, textColor: options.textColor });
      marker.setRadius(options.radius);
      marker.setStyle(options);
    }
  }

  remove(id) {
    const marker = this.markers.get(id);
    if (marker) marker.remove();
    this.markers.delete(id);
  }

  options(device) {
    const style = look(device.kind, device.status);
    const quiet = this.dense && !elevated(device.status);
    return {
      pane: elevated(device.status) ? 'devicesHigh' : 'devicesLow',
      shape: style.shape,
      label: style.label,
      textColor: style.textColor,
      radius: quiet ? Math.min(style.radius, 3) : style.radius,
      color: style.color,
      fillColor: style.fillColor,
      fill: style.fill,
      fillOpacity: quiet ? Math.min(style.fillOpacity, 0.6) : style.fillOpacity,
      weight: quiet ? 0.5 : style.weight,
      dashArray: style.dash ? style.dash.join(',') : null,
      bubblingMouseEvents: false,
    };
  }

  fitDevices(devices) {
    const points = devices.filter((d) => typeof d.lat === 'number' && typeof d.lon === 'number')
      .map((d) => [d.lat, d.lon]);
    if (points.length === 0) return;
    this.map.fitBounds(L.latLngBounds(points), { padding: [30, 30], maxZoom: 14, animate: false });
  }

  focus(id) {
    const marker = this.markers.get(id);
    if (!marker) return;
    const zoom = Math.max(this.map.getZoom(), 13);
    this.map.setView(marker.getLatLng(), zoom, { animate: true });
    this.highlight(id);
  }

  highlight(id) {
    if (this.ring) this.ring.remove();
    this.ring = null;
    const marker = this.markers.get(id);
    if (!marker) return;
    this.ring = L.circleMarker(marker.getLatLng(), {
      pane: 'devicesHigh', radius: 16, color: '#FFFFFF', weight: 2, fill: false,
      interactive: false, dashArray: '4,3',
    }).addTo(this.map);
  }

  invalidate() {
    this.map.invalidateSize({ animate: false });
  }
}
