// The device list: every device one row `<tr data-device-id data-status>` (the map's shapes are
// canvas), sorted by how urgent its status is. Built once; events update rows in place by id,
// so 10,000 devices stay responsive: no re-render per event, one re-sort per second at most.

import { el, setData, setText } from './dom.js';
import { t } from './i18n.js';
import { GLYPHS, rank, shapeOf } from './shapes.js';
import { when } from './time.js';

const RESORT_MS = 1000;
const UNITS = {
  level_cm: 'cm', speed_kmh: 'km/j', pm25: 'µg/m³', pm10: 'µg/m³', o3: 'µg/m³', no2: 'µg/m³',
  so2: 'µg/m³', co: 'µg/m³', hc: 'µg/m³', ispu: '', index: '', volume_vph: '/j',
};

// Made once: toLocaleString builds a formatter per call, which at 10,000 rows costs seconds.
const NUMBER = new Intl.NumberFormat('id-ID', { maximumFractionDigits: 1 });
const NAMES = new Intl.Collator('id', { numeric: true, sensitivity: 'base' });

export function formatValue(value) {
  if (!value || typeof value.v !== 'number') return '–';
  const unit = UNITS[value.field] ?? '';
  const number = Math.abs(value.v) >= 100 ? Math.round(value.v) : value.v;
  const prefix = value.field === 'ispu' || value.field === 'index' ? 'ISPU ' : '';
  return `${prefix}${NUMBER.format(number)}${unit ? ` ${unit}` : ''}`;
}

export function statusName(status) {
  return t(`status.${status}`);
}

export class DeviceList {
  constructor(tbody, { onSelect = () => {}, countNode = null } = {}) {
    this.tbody = tbody;
    this.rows = new Map(); // id -> {tr, device, cells}
    this.onSelect = onSelect;
    this.countNode = countNode;
    this.filterText = '';
    this.sortTimer = null;
    this.lastSort = 0;
    tbody.addEventListener('click', (event) => {
      const row = event.target.closest('tr[data-device-id]');
      if (row) this.onSelect(row.dataset.deviceId);
    });
    tbody.addEventListener('keydown', (event) => {
      const row = event.target.closest('tr[data-device-id]');
      if (row && (event.key === 'Enter' || event.key === ' ')) {
        event.preventDefault();
        this.onSelect(row.dataset.deviceId);
      }
    });
  }

  // The whole catalog, from a state snapshot: rows are reused by id, new ones made, gone ones
  // removed, then one sort.
  replaceAll(devices) {
    const seen = new Set();
    const fragment = document.createDocumentFragment();
    for (const device of devices) {
      seen.add(device.id);
      const row = this.rows.get(device.id);
      if (row) this.replace(device);
      else fragment.append(this.create(device));
    }
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        this.rows.delete(id);
      }
    }
    this.tbody.append(fragment);
    this.sortNow();
    this.applyFilter();
  }

  create(device) {
    const glyph = el('span', { 'class': 'glyph', 'aria-hidden': 'true' }, GLYPHS[shapeOf(device.kind)]);
    const label = el('span', { class: 'status-text' }, statusName(device.status));
    const statusCell = el('td', { class: 'status' }, glyph, label);
    const name = el('span', { class: 'name' }, device.name || device.id);
    const place = el('span', { class: 'place' }, placeOf(device));
    const value = el('td', { class: 'value num' }, formatValue(device.value));
    const time = el('td', { class: 'time num' }, when(device.ts ?? device.last_seen));
    const tr = el('tr', {
      'data-device-id': device.id,
      'data-status': device.status,
      'data-kind': device.kind,
      'tabindex': 0,
    }, statusCell, el('td', { class: 'who' }, name, place), value, time);
    const row = { tr, device: { ...device }, label, value, time, rank: rank(device.status), search: searchText(device) };
    this.rows.set(device.id, row);
    return tr;
  }

  // A `devices` event entry {id, status, value, ts, last_seen}, or a whole device.
  update(change) {
    const row = this.rows.get(change.id);
    if (!row) return false;
    const device = row.device;
    if (change.status !== undefined && change.status !== device.status) {
      device.status = change.status;
      setData(row.tr, 'data-status', change.status);
      setText(row.label, statusName(change.status));
      const newRank = rank(change.status);
      if (newRank !== row.rank) {
        row.rank = newRank;
        this.scheduleSort();
      }
    }
    if (change.value !== undefined && change.value !== null) {
      device.value = change.value;
      setText(row.value, formatValue(change.value));
    }
    if (change.ts !== undefined || change.last_seen !== undefined) {
      device.ts = change.ts ?? device.ts;
      device.last_seen = change.last_seen ?? device.last_seen;
      setText(row.time, when(device.ts ?? device.last_seen));
    }
    return true;
  }

  // A whole device from a snapshot (live or a past moment): what it lacks is cleared, so a
  // past moment without a reading shows none rather than today's.
  replace(device) {
    const row = this.rows.get(device.id);
    if (!row) return;
    this.update(device);
    row.device.value = device.value ?? null;
    row.device.ts = device.ts ?? null;
    row.device.last_seen = device.last_seen ?? null;
    setText(row.value, formatValue(device.value));
    setText(row.time, when(row.device.ts ?? row.device.last_seen));
  }

  // `values` event: {id: [ts, v]}; the field stays the device's known one.
  values(batch) {
    for (const [id, pair] of Object.entries(batch)) {
      const row = this.rows.get(id);
      if (!row || !Array.isArray(pair)) continue;
      const [ts, v] = pair;
      const field = row.device.value?.field ?? '';
      this.update({ id, value: { field, v }, ts });
    }
  }

  device(id) {
    return this.rows.get(id)?.device ?? null;
  }

  devices() {
    return Array.from(this.rows.values(), (row) => row.device);
  }

  scheduleSort() {
    if (this.sortTimer !== null) return;
    const wait = Math.max(0, RESORT_MS - (Date.now() - this.lastSort));
    this.sortTimer = window.setTimeout(() => {
      this.sortTimer = null;
      this.sortNow();
    }, wait);
  }

  // Most urgent first, then by name. Rows already in order are not moved.
  sortNow() {
    this.lastSort = Date.now();
    const ordered = Array.from(this.rows.values()).sort((a, b) =>
      b.rank - a.rank || NAMES.compare(a.device.name, b.device.name) || (a.device.id < b.device.id ? -1 : 1));
    let node = this.tbody.firstElementChild;
    let inOrder = true;
    for (const row of ordered) {
      if (node !== row.tr) {
        inOrder = false;
        break;
      }
      node = node.nextElementSibling;
    }
    if (!inOrder) this.tbody.append(...ordered.map((row) => row.tr));
    this.updateCount();
  }

  filter(text) {
    this.filterText = text.trim().toLowerCase();
    this.applyFilter();
  }

  applyFilter() {
    const words = this.filterText.split(/\s+/).filter(Boolean);
    for (const row of this.rows.values()) {
      const show = words.every((word) => row.search.includes(word) ||
        statusName(row.device.status).toLowerCase().includes(word));
      if (row.tr.hidden === show) row.tr.hidden = !show;
    }
    this.updateCount();
  }

  updateCount() {
    if (!this.countNode) return;
    let shown = 0;
    for (const row of this.rows.values()) if (!row.tr.hidden) shown += 1;
    setText(this.countNode, shown === this.rows.size ? String(this.rows.size) : `${shown} / ${this.rows.size}`);
  }

  // After a language switch: the status words and times.
  relabel() {
    for (const row of this.rows.values()) {
      setText(row.label, statusName(row.device.status));
      setText(row.time, when(row.device.ts ?? row.device.last_seen));
    }
  }

  select(id) {
    for (const tr of this.tbody.querySelectorAll('tr.selected')) tr.classList.remove('selected');
    const row = this.rows.get(id);
    if (row) {
      row.tr.classList.add('selected');
      row.tr.scrollIntoView({ block: 'nearest' });
    }
  }
}

function placeOf(device) {
  const labels = device.labels ?? {};
  return [labels.kota, labels.river].filter(Boolean).join(' · ') || device.id;
}

function searchText(device) {
  return [device.id, device.name, device.kind, ...Object.values(device.labels ?? {})]
    .join(' ').toLowerCase();
}
