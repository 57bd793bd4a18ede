// The live feed: one EventSource on /console/stream. The browser reconnects by itself and sends
// Last-Event-ID; after a refusal (503) or a silent minute we reopen with ?last_event_id=, and
// the service replays what we missed, or says `reset` and the page reloads its state.

const EVENTS = ['devices', 'values', 'alert', 'report', 'reset', 'hb'];
const QUIET_MS = 60000; // heartbeats come every 15 s: a minute of nothing is a dead connection
const REOPEN_MS = [1000, 2000, 5000, 10000]; // after a refusal: soon, then less often

export class Stream {
  constructor({ onEvent, onUp, onDown }) {
    this.onEvent = onEvent;
    this.onUp = onUp;
    this.onDown = onDown;
    this.lastId = '';
    this.source = null;
    this.failures = 0;
    this.timer = null;
    this.watchdog = null;
    this.up = null; // neither yet: the first open or error decides
    this.held = false; // closed until start(): the page has no state to apply events to
    window.addEventListener('offline', () => this.lost());
    window.addEventListener('online', () => this.open());
  }

  // `since`: the snapshot's last_id, so the stream starts where the state left off.
  start(since) {
    if (since) this.lastId = since;
    this.held = false;
    this.open();
  }

  // Closed, and not reopened by anything (a watchdog, the browser coming online) until
  // start(): after `reset` the events that follow assume a state the page has not loaded.
  hold() {
    this.held = true;
    this.close();
  }

  open() {
    if (this.held) return;
    this.close();
    const query = this.lastId ? `?last_event_id=${encodeURIComponent(this.lastId)}` : '';
    const source = new EventSource(`/console/stream${query}`);
    this.source = source;
    source.addEventListener('open', () => {
      this.failures = 0;
      this.alive();
      this.setUp(true);
    });
    source.addEventListener('error', () => {
      this.setUp(false);
      if (source.readyState === EventSource.CLOSED) this.reopenLater();
    });
    for (const name of EVENTS) {
      source.addEventListener(name, (event) => this.receive(name, event));
    }
    source.addEventListener('message', (event) => this.receive('message', event));
    this.alive();
  }

  receive(name, event) {
    if (event.lastEventId) this.lastId = event.lastEventId;
    this.alive();
    this.setUp(true);
    if (name === 'hb' || name === 'message') return;
    let data = null;
    try {
      data = event.data ? JSON.parse(event.data) : null;
    } catch {
      return; // a torn event: the next reset or replay repairs the state
    }
    this.onEvent(name, data);
  }

  alive() {
    window.clearTimeout(this.watchdog);
    this.watchdog = window.setTimeout(() => this.open(), QUIET_MS);
  }

  lost() {
    this.close();
    this.setUp(false);
  }

  reopenLater() {
    this.close();
    const wait = REOPEN_MS[Math.min(this.failures, REOPEN_MS.length - 1)];
    this.failures += 1;
    this.timer = window.setTimeout(() => this.open(), wait);
  }

  close() {
    window.clearTimeout(this.timer);
    window.clearTimeout(this.watchdog);
    if (this.source) this.source.close();
    this.source = null;
  }

  setUp(up) {
    if (up === this.up) return;
    this.up = up;
    (up ? this.onUp : this.onDown)();
  }
}
