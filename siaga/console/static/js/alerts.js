// The alerts panel: firing and pending alerts by severity, newest first within one severity;
// resolved ones of the last 24 hours below. Each row `data-fingerprint`.

import { hasToken } from './auth.js';
import { el, replace, setText } from './dom.js';
import { t } from './i18n.js';
import { when } from './time.js';

const SEVERITY = { critical: 4, major: 3, warning: 2, info: 1 };
const RESOLVED_KEPT_MS = 24 * 3600 * 1000;
const RENDER_AFTER_MS = 50; // events of one tick arrive together: one redraw for all of them

export class AlertPanel {
  constructor({ active, resolved, count, empty }, { onAck, onSilence, onSelect, readonly = false }) {
    this.nodes = { active, resolved, count, empty };
    this.alerts = new Map();
    this.rows = new Map();
    this.actions = { onAck, onSilence, onSelect };
    this.readonly = readonly;
    this.nowOffsetMs = 0;
    this.pending = 0; // a redraw is scheduled
    for (const body of [active, resolved]) {
      body.addEventListener('click', (event) => this.click(event));
    }
  }

  // The service's clock against ours: "resolved in the last 24 h" is the service's 24 h.
  setNow(serverNow) {
    const server = Date.parse(serverNow);
    if (!Number.isNaN(server)) this.nowOffsetMs = server - Date.now();
  }

  replaceAll(alerts) {
    this.alerts = new Map(alerts.map((alert) => [alert.fingerprint, alert]));
    this.rows.clear();
    window.clearTimeout(this.pending);
    this.pending = 0;
    this.render();
  }

  upsert(alert) {
    this.alerts.set(alert.fingerprint, alert);
    this.rows.delete(alert.fingerprint);
    this.schedule();
  }

  // A silence change re-sends every alert it touches, one event each: they are drawn once,
  // together, rather than sorting and placing every row once per event.
  schedule() {
    if (this.pending) return;
    this.pending = window.setTimeout(() => {
      this.pending = 0;
      this.render();
    }, RENDER_AFTER_MS);
  }

  forDevice(id) {
    return this.sorted().filter((alert) => alert.labels?.device_id === id);
  }

  // Only rows whose alert changed are rebuilt; the rest are moved, which keeps focus and hover.
  render() {
    const now = Date.now() + this.nowOffsetMs;
    const active = [];
    const resolved = [];
    for (const alert of this.sorted()) {
      if (alert.status === 'resolved') {
        const ended = Date.parse(alert.ends_at ?? alert.evaluated_at);
        if (now - ended <= RESOLVED_KEPT_MS) resolved.push(alert);
      } else {
        active.push(alert);
      }
    }
    replace(this.nodes.active, active.map((alert) => this.row(alert)));
    replace(this.nodes.resolved, resolved.map((alert) => this.row(alert)));
    const firing = active.filter((alert) => alert.status === 'firing').length;
    setText(this.nodes.count, String(firing));
    this.nodes.count.dataset.count = String(firing);
    this.nodes.empty.hidden = active.length > 0;
  }

  sorted() {
    return Array.from(this.alerts.values()).sort((a, b) =>
      (SEVERITY[b.severity] ?? 0) - (SEVERITY[a.severity] ?? 0) ||
      Date.parse(b.starts_at) - Date.parse(a.starts_at) ||
      (a.fingerprint < b.fingerprint ? -1 : 1));
  }

  row(alert) {
    const cached = this.rows.get(alert.fingerprint);
    if (cached) return cached;
    const labels = alert.labels ?? {};
    const acked = alert.acknowledged;
    const state = alert.silenced_by?.length ? t('alert.silenced') :
      acked ? t('alert.acked', { by: acked.by }) : t(`alert.status.${alert.status}`);
    const actions = el('div', { class: 'actions' });
    if (!this.readonly && hasToken() && alert.status !== 'resolved') {
      if (!acked) {
        actions.append(el('button', { 'type': 'button', 'class': 'small', 'data-action': 'ack' }, t('alert.ack')));
      }
      actions.append(el('button', { 'type': 'button', 'class': 'small quiet', 'data-action': 'silence' }, t('alert.silence')));
    }
    const tr = el('tr', {
      'data-fingerprint': alert.fingerprint,
      'data-severity': alert.severity,
      'data-alert-status': alert.status,
      'data-acknowledged': acked ? 'true' : 'false',
      'data-device': labels.device_id ?? false,
      'tabindex': 0,
    },
    el('td', { class: 'severity' }, el('span', { class: `badge sev-${alert.severity}` }, t(`severity.${alert.severity}`))),
    el('td', { class: 'what' },
      el('span', { class: 'summary' }, summary(alert)),
      el('span', { class: 'meta' }, [labels.alertname ?? alert.rule, labels.name ?? labels.device_id ?? alert.subject]
        .filter(Boolean).join(' · ')),
      actions),
    el('td', { class: 'since num' },
      el('span', {}, when(alert.status === 'resolved' ? alert.ends_at : alert.starts_at)),
      el('span', { class: 'state' }, state)));
    this.rows.set(alert.fingerprint, tr);
    return tr;
  }

  click(event) {
    const tr = event.target.closest('tr[data-fingerprint]');
    if (!tr) return;
    const alert = this.alerts.get(tr.dataset.fingerprint);
    if (!alert) return;
    const button = event.target.closest('button[data-action]');
    if (button?.dataset.action === 'ack') this.actions.onAck(alert, button);
    else if (button?.dataset.action === 'silence') this.actions.onSilence(alert);
    else if (!button) this.actions.onSelect(alert);
  }

  // After a sign-in or out, or a language switch: rows are rebuilt with or without controls.
  refresh() {
    this.rows.clear();
    this.render();
  }
}

export function summary(alert) {
  return alert.annotations?.summary || alert.annotations?.description ||
    `${alert.labels?.alertname ?? alert.rule} ${alert.subject ?? ''}`.trim();
}

export function severityName(severity) {
  return t(`severity.${severity}`);
}
