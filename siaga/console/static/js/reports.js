// Residents' reports on the map: DOM markers (each `data-report-id`), gathered by a pixel grid
// when they crowd, so no clustering library is needed (plan section 6).

import { el } from './dom.js';
import { t } from './i18n.js';

const L = window.L;
const CELL_PX = 56; // about a finger's width on the wall screen: closer reports merge
const CLOSED = new Set(['closed']);

export class ReportLayer {
  constructor(map, { onReport = () => {} } = {}) {
    this.map = map;
    this.reports = new Map();
    this.group = L.layerGroup().addTo(map);
    this.onReport = onReport;
    this.pending = false;
    map.on('zoomend moveend', () => this.schedule());
  }

  replaceAll(reports) {
    this.reports = new Map(reports.map((report) => [report.id, report]));
    this.schedule();
  }

  upsert(report) {
    this.reports.set(report.id, report);
    this.schedule();
  }

  all() {
    return Array.from(this.reports.values());
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    window.requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  // One marker per occupied grid cell: a report alone shows itself, several show their count
  // (and carry their ids, hidden, so the page still lists every report).
  draw() {
    this.group.clearLayers();
    const cells = new Map();
    for (const report of this.reports.values()) {
      const lat = report.lat;
      const lon = report.long ?? report.lon;
      if (typeof lat !== 'number' || typeof lon !== 'number') continue;
      const point = this.map.project([lat, lon]);
      const key = `${Math.floor(point.x / CELL_PX)}:${Math.floor(point.y / CELL_PX)}`;
      if (!cells.has(key)) cells.set(key, []);
      cells.get(key).push({ report, lat, lon });
    }
    for (const members of cells.values()) {
      if (members.length === 1) this.single(members[0]);
      else this.cluster(members);
    }
  }

  single({ report, lat, lon }) {
    const closed = CLOSED.has(report.status);
    const node = el('div', {
      'class': `report report-${report.category}${closed ? ' report-closed' : ''}`,
      'data-report-id': report.id,
      'data-state': report.state,
      'role': 'button',
      'tabindex': 0,
      'title': `${categoryName(report.category)} · ${t(`report.state.${report.state}`)}`,
    }, el('span', { 'aria-hidden': 'true' }, categoryMark(report.category)));
    node.addEventListener('click', (event) => {
      event.stopPropagation();
      this.onReport(report.id);
    });
    node.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') this.onReport(report.id);
    });
    L.marker([lat, lon], {
      pane: 'reports', keyboard: false,
      icon: L.divIcon({ className: 'report-icon', html: node, iconSize: [22, 22] }),
    }).addTo(this.group);
  }

  cluster(members) {
    const lat = members.reduce((sum, m) => sum + m.lat, 0) / members.length;
    const lon = members.reduce((sum, m) => sum + m.lon, 0) / members.length;
    const node = el('div', {
      'class': 'report-cluster',
      'data-count': members.length,
      'role': 'button',
      'title': t('reports.cluster', { n: members.length }),
    }, el('span', { class: 'count' }, String(members.length)),
    members.map(({ report }) => el('span', { 'hidden': true, 'data-report-id': report.id })));
    node.addEventListener('click', (event) => {
      event.stopPropagation();
      const bounds = L.latLngBounds(members.map((m) => [m.lat, m.lon]));
      this.map.fitBounds(bounds.pad(0.5), { maxZoom: this.map.getZoom() + 3 });
    });
    const size = members.length < 10 ? 28 : members.length < 100 ? 34 : 40;
    L.marker([lat, lon], {
      pane: 'reports', keyboard: false,
      icon: L.divIcon({ className: 'report-icon', html: node, iconSize: [size, size] }),
    }).addTo(this.group);
  }
}

export function categoryName(code) {
  const key = `category.${code}`;
  const name = t(key);
  return name === key ? code : name;
}

// A letter per category, so a flood report and a rubbish report differ without colour.
const MARKS = {
  'banjir': 'B', 'macet': 'M', 'jalan-rusak': 'J', 'sampah': 'S', 'pohon': 'P',
  'parkir-liar': 'PL', 'gangguan-ketenteraman': 'G', 'pelanggaran-perda': 'PD',
  'kriminalitas': 'K', 'pelayanan-publik': 'PP', 'lainnya': '?',
};

function categoryMark(code) {
  return MARKS[code] ?? '?';
}

// Reports within `metres` of a point, for the device panel.
export function near(reports, lat, lon, metres) {
  return reports.filter((report) => {
    const rLon = report.long ?? report.lon;
    return typeof report.lat === 'number' && typeof rLon === 'number' &&
      distance(lat, lon, report.lat, rLon) <= metres;
  });
}

export function distance(lat1, lon1, lat2, lon2) {
  const rad = Math.PI / 180;
  const dLat = (lat2 - lat1) * rad;
  const dLon = (lon2 - lon1) * rad;
  const a = Math.sin(dLat / 2) ** 2 +
    Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * 6371000 * Math.asin(Math.sqrt(a));
}
