// The side panel: one device (name, place, labels, latest reading, thresholds, a 24-hour chart
// with its Siaga levels, its alerts, reports within 1 km) or one resident's report.

import { el, replace } from './dom.js';
import { formatValue, statusName } from './devicelist.js';
import { has, t } from './i18n.js';
import { categoryName, distance, near } from './reports.js';
import { GLYPHS, look, shapeOf } from './shapes.js';
import { clock, dateTime, when } from './time.js';
import { summary } from './alerts.js';

const NEAR_M = 1000;
const UPLOT = '../vendor/uplot-1.6.32/uPlot.esm.js';
// The chart's horizontal lines: the ladder's colours, as on the map.
const LEVELS = [
  ['siaga3_cm', '#F0E442', 'Siaga 3'], ['siaga2_cm', '#E69F00', 'Siaga 2'], ['siaga1_cm', '#D55E00', 'Siaga 1'],
];

export class Panel {
  constructor(node, { onClose = () => {}, onAlert = () => {} } = {}) {
    this.node = node;
    this.body = node.querySelector('.panel-body');
    this.onClose = onClose;
    this.onAlert = onAlert;
    this.current = null; // {type: 'device'|'report', id}
    this.chart = null;
    this.request = 0;
    node.querySelector('[data-action="close-panel"]').addEventListener('click', () => this.close());
    this.resize = new ResizeObserver(() => this.fitChart());
    this.resize.observe(this.body);
  }

  close() {
    this.current = null;
    this.node.hidden = true;
    this.dropChart();
    replace(this.body);
    this.onClose();
  }

  isShowing(type, id) {
    return this.current?.type === type && (id === undefined || this.current.id === id);
  }

  // `context`: {device, alerts, reports, at} (at: the history moment, or null when live).
  async showDevice({ device, alerts, reports, cameras = [], at }, { reload = true } = {}) {
    this.current = { type: 'device', id: device.id };
    this.node.hidden = false;
    const style = look(device.kind, device.status);
    const labels = Object.entries(device.labels ?? {});
    const thresholds = Object.entries(device.thresholds ?? {});
    const nearby = near(reports, device.lat, device.lon, NEAR_M);
    // The cameras that look at this place: those watching over it, and any within 1 km.
    const lookers = device.kind === 'camera' ? [] : cameras.filter((camera) => camera.watches === device.id
      || distance(device.lat, device.lon, camera.lat, camera.lon) <= NEAR_M);
    const chartBox = reload || !this.chartBox ? el('div', { class: 'chart' }, el('p', { class: 'muted' }, t('chart.loading'))) : this.chartBox;
    this.chartBox = chartBox;
    replace(this.body,
      el('header', { 'class': 'panel-head', 'data-device-id-panel': device.id },
        el('span', { 'class': `glyph big status-${device.status}`, 'aria-hidden': 'true' }, GLYPHS[shapeOf(device.kind)]),
        el('div', {},
          el('h2', { class: 'panel-title' }, device.name || device.id),
          el('p', { class: 'muted' }, `${t(`kind.${device.kind}`)} · ${device.id}`))),
      el('p', { 'class': 'status-line', 'data-status': device.status },
        el('span', { class: 'status-chip' }, statusName(device.status)),
        el('span', { class: 'reading' }, formatValue(device.value)),
        el('span', { class: 'muted' }, when(device.ts ?? device.last_seen))),
      section('panel.place', definitions([
        [t('panel.coordinates'), `${device.lat?.toFixed(4)}, ${device.lon?.toFixed(4)}`],
        ...(device.spot ? [[t('panel.spot'), device.spot]] : []),
        ...(device.watches ? [[t('panel.watches'), device.watches]] : []),
        ...(device.zones?.length ? [[t('panel.zones'), device.zones.join(', ')]] : []),
        ...labels,
      ])),
      thresholds.length ? section('panel.thresholds', definitions(thresholds.map(([k, v]) => [has(`threshold.${k}`) ? t(`threshold.${k}`) : k, String(v)]))) : null,
      device.kind === 'camera' && !at ? section('panel.counts', this.countsBox(device, reload)) : null,
      section('panel.chart', chartBox),
      section('panel.alerts', alerts.length ? el('ul', { class: 'plain' }, alerts.map((alert) => {
        const item = el('li', { 'class': 'link', 'tabindex': 0, 'data-fingerprint-ref': alert.fingerprint },
          el('span', { class: `badge sev-${alert.severity}` }, t(`severity.${alert.severity}`)), ' ', summary(alert),
          el('span', { class: 'muted' }, ` · ${t(`alert.status.${alert.status}`)}`));
        item.addEventListener('click', () => this.onAlert(alert));
        return item;
      })) : el('p', { class: 'muted' }, t('panel.none'))),
      lookers.length ? section('panel.cameras', el('ul', { class: 'plain' }, lookers.map((camera) =>
        el('li', {}, `${camera.name || camera.id} · ${statusName(camera.status)} · `,
          formatValue(camera.value))))) : null,
      section('panel.reports', nearby.length ? el('ul', { class: 'plain' }, nearby.map((report) =>
        el('li', {}, `${categoryName(report.category)} · ${t(`report.state.${report.state}`)} · `,
          `${Math.round(distance(device.lat, device.lon, report.lat, report.long ?? report.lon))} m · `,
          when(report.requested_at)))) : el('p', { class: 'muted' }, t('panel.none'))),
    );
    if (reload) await this.loadChart(device, style, at);
  }

  // A camera's latest counts (the list shows only its water_score): read from the API's
  // device answer, kept while the panel is redrawn for the same camera.
  countsBox(device, reload) {
    if (!reload && this.counts?.id === device.id) return this.counts.box;
    const box = el('div', {}, el('p', { class: 'muted' }, t('chart.loading')));
    this.counts = { id: device.id, box };
    fetch(`/api/devices/${encodeURIComponent(device.id)}`, { cache: 'no-store' })
      .then((response) => (response.ok ? response.json() : null))
      .then((answer) => {
        const values = answer?.latest?.values ?? {};
        const pairs = COUNTS.filter((name) => typeof values[name] === 'number')
          .map((name) => [t(`count.${name}`), formatCount(name, values[name])]);
        replace(box, pairs.length ? definitions(pairs) : el('p', { class: 'muted' }, t('panel.none')));
      })
      .catch(() => replace(box, el('p', { class: 'muted' }, t('panel.none'))));
    return box;
  }

  showReport(report) {
    this.current = { type: 'report', id: report.id };
    this.node.hidden = false;
    this.dropChart();
    replace(this.body,
      el('header', { class: 'panel-head' },
        el('div', {},
          el('h2', { class: 'panel-title' }, categoryName(report.category)),
          el('p', { class: 'muted' }, `${t('report.title')} ${report.id}`))),
      el('p', { class: 'status-line' }, el('span', { class: 'status-chip' }, t(`report.state.${report.state}`)),
        el('span', { class: 'muted' }, dateTime(report.requested_at))),
      report.description ? el('p', { class: 'description' }, report.description) : null,
      section('panel.place', definitions([[t('panel.coordinates'),
        `${report.lat?.toFixed(5)}, ${(report.long ?? report.lon)?.toFixed(5)}`]])));
  }

  async loadChart(device, style, at) {
    const ticket = ++this.request;
    this.dropChart();
    const query = new URLSearchParams({ hours: '24' });
    if (at) query.set('at', at);
    let series;
    try {
      const response = await fetch(`/console/api/devices/${encodeURIComponent(device.id)}/series?${query}`);
      if (ticket !== this.request) return;
      if (response.status === 501) {
        replace(this.chartBox, el('p', { class: 'muted' }, t('chart.unavailable')));
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      series = await response.json();
    } catch {
      if (ticket === this.request) replace(this.chartBox, el('p', { class: 'muted' }, t('chart.failed')));
      return;
    }
    const points = series.points ?? [];
    if (points.length === 0) {
      replace(this.chartBox, el('p', { class: 'muted' }, t('chart.empty')));
      return;
    }
    const { default: uPlot } = await import(UPLOT);
    if (ticket !== this.request) return;
    replace(this.chartBox);
    const xs = points.map((p) => p[0] / 1000);
    const ys = points.map((p) => p[1]);
    const levels = LEVELS.filter(([name]) => typeof device.thresholds?.[name] === 'number')
      .map(([name, color, label]) => ({ value: device.thresholds[name], color, label }));
    const values = [...ys.filter((y) => typeof y === 'number'), ...levels.map((l) => l.value)];
    const low = Math.min(...values);
    const high = Math.max(...values);
    const pad = Math.max((high - low) * 0.08, 1);
    const width = Math.max(this.chartBox.clientWidth, 240);
    this.chart = new uPlot({
      width,
      height: 180,
      tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), 'Asia/Jakarta'),
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { y: { range: [low - pad, high + pad] } },
      axes: [
        { stroke: '#8B95A3', grid: { stroke: '#222C38' }, ticks: { stroke: '#222C38' },
          values: (u, ticks) => ticks.map((seconds) => clock(seconds * 1000).replace(' WIB', '')) },
        { stroke: '#8B95A3', grid: { stroke: '#222C38' }, ticks: { stroke: '#222C38' }, size: 48 },
      ],
      series: [{}, { label: series.field ?? '', stroke: style.fillColor === '#111111' ? '#DDDDDD' : '#9CC9EE', width: 1.5, spanGaps: false }],
      hooks: { draw: [(u) => drawLevels(u, levels)] },
    }, [xs, ys], this.chartBox);
    this.chartBox.append(el('p', { class: 'muted small' },
      `${t('chart.caption')} (${series.unit ?? ''})`, levels.length ? ` · ${levels.map((l) => `${l.label} ${l.value}`).join(' · ')}` : ''));
  }

  fitChart() {
    if (!this.chart || !this.chartBox) return;
    const width = Math.max(this.chartBox.clientWidth, 240);
    if (Math.abs(width - this.chart.width) > 4) this.chart.setSize({ width, height: 180 });
  }

  dropChart() {
    if (this.chart) this.chart.destroy();
    this.chart = null;
  }
}

// The Siaga levels as dashed horizontal lines across the plot, drawn on uPlot's canvas.
function drawLevels(u, levels) {
  const { ctx } = u;
  const { left, width } = u.bbox;
  ctx.save();
  ctx.lineWidth = 1.5 * devicePixelRatio;
  ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
  for (const level of levels) {
    const y = Math.round(u.valToPos(level.value, 'y', true));
    ctx.strokeStyle = level.color;
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(left + width, y);
    ctx.stroke();
    ctx.fillStyle = level.color;
    ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
    ctx.textAlign = 'right';
    ctx.fillText(level.label, left + width - 4 * devicePixelRatio, y - 4 * devicePixelRatio);
  }
  ctx.restore();
}

const COUNTS = ['water_score', 'vehicles_per_min', 'mean_speed_kmh', 'people'];

function formatCount(name, value) {
  return name === 'water_score' ? value.toFixed(2) : String(Math.round(value * 10) / 10);
}

function section(titleKey, content) {
  return el('section', { class: 'panel-section' }, el('h3', {}, t(titleKey)), content);
}

function definitions(pairs) {
  return el('dl', { class: 'pairs' }, pairs.flatMap(([key, value]) => [el('dt', {}, key), el('dd', {}, String(value))]));
}
