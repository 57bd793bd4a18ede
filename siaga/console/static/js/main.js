// The monitoring room's page: loads the state, draws it, then follows the live stream.

import { AlertPanel } from './alerts.js';
import { AuthError, hasToken, onAuth, operator, post, signIn, signOut } from './auth.js';
import { Panel } from './device.js';
import { DeviceList } from './devicelist.js';
import { $, $$, el, replace, setText } from './dom.js';
import { History } from './history.js';
import { lang, onLanguage, setLanguage, storedLanguage, t } from './i18n.js';
import { DeviceMap } from './map.js';
import { ReportLayer } from './reports.js';
import { GLYPHS } from './shapes.js';
import { Stream } from './stream.js';
import { clock, clockSeconds, dateTime, wibInput } from './time.js';

const wall = new URLSearchParams(window.location.search).get('wall') === '1';
const TOAST_MS = 6000;
const RELOAD_MS = [1000, 2000, 5000, 10000]; // a state that failed to load is asked again

class Console {
  constructor() {
    this.history = new History();
    this.state = null;
    this.map = new DeviceMap($('#map'), {
      wall,
      onDevice: (id) => this.selectDevice(id),
      onBackground: () => this.panel.close(),
    });
    this.reports = new ReportLayer(this.map.map, { onReport: (id) => this.selectReport(id) });
    this.list = new DeviceList($('#device-rows'), {
      onSelect: (id) => this.selectDevice(id, { pan: true }),
      countNode: $('#device-count'),
    });
    this.alerts = new AlertPanel({
      active: $('#alerts-active'), resolved: $('#alerts-resolved'),
      count: $('#alert-count'), empty: $('#alerts-empty'),
    }, {
      readonly: wall,
      onAck: (alert, button) => this.acknowledge(alert, button),
      onSilence: (alert) => this.openSilence(alert),
      onSelect: (alert) => {
        const id = alert.labels?.device_id;
        if (id && this.list.device(id)) this.selectDevice(id, { pan: true });
      },
    });
    this.panel = new Panel($('#panel'), {
      onClose: () => this.map.highlight(null),
      onAlert: (alert) => $(`[data-fingerprint="${CSS.escape(alert.fingerprint)}"]`)?.focus(),
    });
    this.stream = new Stream({
      onEvent: (name, data) => this.event(name, data),
      onUp: () => this.connection(true),
      onDown: () => this.connection(false),
    });
    this.silencing = null;
    this.reloading = null; // the live state's load under way, which a second asker joins
    this.wire();
  }

  async boot() {
    const state = await this.fetchState();
    const configured = state.config?.language;
    if (!storedLanguage() && configured && configured !== lang()) {
      await setLanguage(configured, { remember: false });
    }
    if (state.config?.tile_url) this.map.useTiles(state.config.tile_url, state.config.tile_attribution);
    else this.map.loadBase();
    this.apply(state);
    this.map.fitDevices(state.devices ?? []);
    this.legend();
    this.stream.start(state.last_id);
    window.__siagaReady = true;
    // The Leaflet map, for scripts that drive the page (browser tests zoom with it).
    window.__siagaMap = this.map.map;
    document.body.dataset.ready = 'true';
  }

  async fetchState() {
    const response = await fetch('/console/api/state', { cache: 'no-store' });
    if (!response.ok) throw new Error(`state: HTTP ${response.status}`);
    return response.json();
  }

  // A snapshot (live state or a history moment): everything is upserted in place by id.
  apply(state) {
    this.state = state;
    const devices = state.devices ?? [];
    this.list.replaceAll(devices);
    const ids = new Set(devices.map((device) => device.id));
    for (const id of Array.from(this.map.markers.keys())) if (!ids.has(id)) this.map.remove(id);
    this.map.setDensity(devices.length);
    for (const device of devices) this.map.upsert(device);
    this.alerts.setNow(state.now);
    this.alerts.replaceAll(state.alerts ?? []);
    this.reports.replaceAll(state.reports ?? []);
    this.touched(state.now);
    this.refreshPanel();
  }

  event(name, data) {
    if (this.history.active) return; // a past moment is on screen: live changes wait
    switch (name) {
      case 'devices':
        for (const change of data ?? []) {
          this.list.update(change);
          if (change.status) this.map.setStatus(change.id, change.status);
        }
        this.refreshPanel((data ?? []).some((c) => this.panel.isShowing('device', c.id)));
        break;
      case 'values':
        this.list.values(data ?? {});
        this.refreshPanel(Object.hasOwn(data ?? {}, this.panel.current?.id ?? ''));
        break;
      case 'alert':
        if (data?.fingerprint) this.alerts.upsert(data);
        this.refreshPanel(this.panel.isShowing('device', data?.labels?.device_id));
        break;
      case 'report':
        if (data?.id) this.reports.upsert(data);
        break;
      case 'reset':
        this.reload();
        return;
      default:
        return;
    }
    this.touched();
  }

  // The live state again (after `reset`, or back from a past moment). The stream is held
  // until it has loaded: the events after a reset assume the state they follow, and a page
  // applying them to its old one would look current while missing what it never heard.
  // A failed load (a flaky link, a 503 while the service starts) is asked again, less often.
  reload() {
    this.reloading ??= this.loadLive().finally(() => { this.reloading = null; });
    return this.reloading;
  }

  async loadLive() {
    this.stream.hold();
    for (let attempt = 0; !this.history.active; attempt += 1) {
      try {
        const state = await this.fetchState();
        if (this.history.active) return; // a past moment was chosen meanwhile: it stays
        this.apply(state);
        // The snapshot may be older than the event that asked for it (it is cached for a
        // second): the stream starts again from the snapshot's own id, so every change
        // after it is applied on top, none lost.
        this.stream.start(state.last_id);
        return;
      } catch (error) {
        this.stream.lost(); // the banner: what the page shows is no longer current
        this.toast(`${t('error.state')}: ${error.message}`);
        await pause(RELOAD_MS[Math.min(attempt, RELOAD_MS.length - 1)]);
      }
    }
  }

  touched(at) {
    setText($('#updated'), clock(at ?? new Date()));
  }

  connection(up) {
    const value = up ? 'up' : 'down';
    document.body.dataset.connection = value;
    const banner = $('#banner');
    banner.dataset.connection = value;
    banner.hidden = up;
  }

  selectDevice(id, { pan = false } = {}) {
    const device = this.list.device(id);
    if (!device) return;
    this.list.select(id);
    if (pan) this.map.focus(id);
    else this.map.highlight(id);
    this.showDevice(device, true);
  }

  showDevice(device, reload) {
    this.panel.showDevice({
      device,
      alerts: this.alerts.forDevice(device.id),
      reports: this.reports.all(),
      cameras: this.list.devices().filter((other) => other.kind === 'camera'),
      at: this.history.at,
    }, { reload });
  }

  selectReport(id) {
    const report = this.reports.reports.get(id);
    if (report) this.panel.showReport(report);
  }

  // Redraw the open panel's text (not its chart) when its device or alerts change.
  refreshPanel(changed = true) {
    if (!changed || !this.panel.current) return;
    const { type, id } = this.panel.current;
    if (type === 'device') {
      const device = this.list.device(id);
      if (device) this.showDevice(device, false);
      else this.panel.close();
    } else if (type === 'report') {
      this.selectReport(id);
    }
  }

  wire() {
    $('#device-filter').addEventListener('input', (event) => {
      window.clearTimeout(this.filterTimer);
      this.filterTimer = window.setTimeout(() => this.list.filter(event.target.value), 120);
    });
    for (const button of $$('[data-action="lang"]')) {
      button.addEventListener('click', () => setLanguage(button.value));
    }
    onLanguage(() => {
      for (const button of $$('[data-action="lang"]')) {
        button.setAttribute('aria-pressed', String(button.value === lang()));
      }
      this.list.relabel();
      this.alerts.refresh();
      this.reports.schedule();
      this.legend();
      this.authButton();
      this.refreshPanel();
      this.stripe();
    });
    $('#login').addEventListener('click', () => {
      if (hasToken()) signOut();
      else this.openDialog($('#token-dialog'));
    });
    $('[data-action="token-save"]').addEventListener('click', () => this.saveToken());
    $('#token-dialog input[name="token"]').addEventListener('keydown', (event) => {
      if (event.key === 'Enter') this.saveToken();
    });
    $('[data-action="silence-save"]').addEventListener('click', () => this.saveSilence());
    for (const button of $$('[data-action="dialog-cancel"]')) {
      button.addEventListener('click', () => button.closest('dialog').close());
    }
    onAuth((signedIn) => {
      this.authButton();
      this.alerts.refresh();
      if (!signedIn && this.refused) this.toast(t('auth.refused'));
      this.refused = false;
    });
    this.authButton();
    $('[data-action="history"]').addEventListener('click', () => this.showHistory());
    $('#history-at').addEventListener('keydown', (event) => {
      if (event.key === 'Enter') this.showHistory();
    });
    $('[data-action="live"]').addEventListener('click', () => this.backToLive());
    $('#history-at').value = wibInput(new Date(Date.now() - 3600 * 1000));
    window.setInterval(() => setText($('#clock'), clockSeconds(new Date())), 1000);
    setText($('#clock'), clockSeconds(new Date()));
    window.addEventListener('resize', () => this.map.invalidate());
  }

  authButton() {
    const button = $('#login');
    button.dataset.i18n = hasToken() ? 'auth.logout' : 'auth.login';
    setText(button, t(button.dataset.i18n));
    document.body.dataset.auth = hasToken() ? 'operator' : 'read-only';
  }

  openDialog(dialog) {
    for (const error of $$('.error', dialog)) error.hidden = true;
    dialog.showModal();
    $('input, textarea', dialog)?.focus();
  }

  saveToken() {
    const dialog = $('#token-dialog');
    const token = $('input[name="token"]', dialog).value.trim();
    if (!token) {
      this.dialogError('#token-error', t('auth.empty'));
      return;
    }
    signIn(token, $('input[name="operator"]', dialog).value);
    $('input[name="token"]', dialog).value = '';
    dialog.close();
  }

  async acknowledge(alert, button) {
    button.disabled = true;
    try {
      const answer = await post(`/api/alerts/${encodeURIComponent(alert.fingerprint)}/ack`,
        { by: operator(), comment: '' });
      if (answer?.fingerprint) this.alerts.upsert(answer);
      this.toast(t('alert.acked.done'));
    } catch (error) {
      this.failed(error);
      button.disabled = false;
    }
  }

  openSilence(alert) {
    this.silencing = alert;
    const dialog = $('#silence-dialog');
    replace($('#silence-matchers'), matchersOf(alert).map((m) => el('code', {}, m)));
    $('textarea[name="comment"]', dialog).value = '';
    this.openDialog(dialog);
    $('textarea[name="comment"]', dialog).focus();
  }

  async saveSilence() {
    const dialog = $('#silence-dialog');
    const comment = $('textarea[name="comment"]', dialog).value.trim();
    if (!comment) {
      this.dialogError('#silence-error', t('silence.comment.required'));
      return;
    }
    const alert = this.silencing;
    if (!alert) return;
    try {
      await post('/api/silences', {
        matchers: matchersOf(alert),
        duration: $('select[name="duration"]', dialog).value,
        created_by: operator(),
        comment,
      });
      dialog.close();
      this.toast(t('silence.done'));
    } catch (error) {
      if (error instanceof AuthError) dialog.close();
      else this.dialogError('#silence-error', error.message);
      this.failed(error);
    }
  }

  dialogError(selector, message) {
    const node = $(selector);
    setText(node, message);
    node.hidden = false;
  }

  failed(error) {
    if (error instanceof AuthError) {
      this.refused = true;
      this.authButton();
      this.alerts.refresh();
      this.toast(t('auth.refused'));
    } else {
      this.toast(`${t('error.action')}: ${error.message}`);
    }
  }

  async showHistory() {
    const input = $('#history-at');
    try {
      const state = await this.history.load(input.value);
      document.body.dataset.mode = 'history';
      this.alerts.readonly = true;
      this.apply(state);
      this.stripe();
      this.reopenPanel();
    } catch (error) {
      this.toast(error instanceof RangeError ? t('history.invalid') : `${t('history.failed')}: ${error.message}`);
    }
  }

  async backToLive() {
    this.history.leave();
    document.body.dataset.mode = 'live';
    this.alerts.readonly = wall;
    this.stripe();
    await this.reload();
    this.reopenPanel();
  }

  // The open device's panel again, chart included: its 24 hours end at the moment shown.
  reopenPanel() {
    const open = this.panel.current;
    if (open?.type !== 'device') return;
    const device = this.list.device(open.id);
    if (device) this.showDevice(device, true);
  }

  stripe() {
    const stripe = $('#stripe');
    stripe.hidden = !this.history.active;
    if (this.history.active) setText($('#stripe-text'), t('history.stripe', { at: dateTime(this.history.at) }));
  }

  toast(message) {
    const node = $('#toast');
    setText(node, message);
    node.hidden = false;
    window.clearTimeout(this.toastTimer);
    this.toastTimer = window.setTimeout(() => { node.hidden = true; }, TOAST_MS);
  }

  // What the shapes and colours mean; always in words too.
  legend() {
    const item = (cls, glyph, key) => el('span', { class: `legend-item ${cls}` },
      el('span', { class: 'glyph' }, glyph), t(key));
    replace($('#legend'),
      el('div', { class: 'legend-row' },
        item('kind', GLYPHS.triangle, 'kind.water-level'),
        item('kind', GLYPHS.circle, 'kind.air-quality'),
        item('kind', GLYPHS.square, 'kind.traffic'),
        item('kind', GLYPHS.diamond, 'kind.camera')),
      el('div', { class: 'legend-row' },
        item('status-siaga-3', '3', 'status.siaga-3'),
        item('status-siaga-2', '2', 'status.siaga-2'),
        item('status-siaga-1', '1', 'status.siaga-1'),
        item('status-water', '≈', 'status.water'),
        item('status-offline', '○', 'status.offline')));
  }
}

function pause(ms) {
  return new Promise((resolve) => { window.setTimeout(resolve, ms); });
}

// The silence's matchers: the alert's name and, when it is one device's, that device.
function matchersOf(alert) {
  const labels = alert.labels ?? {};
  const pairs = [['alertname', labels.alertname ?? alert.rule]];
  if (labels.device_id) pairs.push(['device_id', labels.device_id]);
  return pairs.filter(([, value]) => value).map(([name, value]) => `${name}=${quoted(value)}`);
}

function quoted(value) {
  const text = String(value);
  if (/^[^"\s\\](.*[^\s])?$/.test(text) && !text.includes('"')) return text;
  return `"${text.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}

async function start() {
  if (wall) document.body.classList.add('wall');
  await setLanguage(storedLanguage() ?? document.documentElement.lang ?? 'id', { remember: false });
  const room = new Console();
  try {
    await room.boot();
  } catch (error) {
    room.connection(false);
    room.toast(`${t('error.state')}: ${error.message}`);
    window.setTimeout(() => window.location.reload(), 10000);
  }
}

start();
