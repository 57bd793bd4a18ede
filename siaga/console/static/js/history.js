// History mode: the map, list and alerts as they were at a past moment (read as WIB). Live
// events are dropped meanwhile; "Kembali ke langsung" reloads the live state.

import { inputAsWib } from './time.js';

export class History {
  constructor() {
    this.at = null; // RFC 3339 with +07:00 while a past moment is shown
  }

  get active() {
    return this.at !== null;
  }

  // The state of the moment the input names, or an Error saying why not.
  async load(inputValue) {
    const at = inputAsWib(inputValue);
    if (at === null) throw new RangeError('time');
    const response = await fetch(`/console/api/history?at=${encodeURIComponent(at)}`, { cache: 'no-store' });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    this.at = at;
    return body;
  }

  leave() {
    this.at = null;
  }
}
