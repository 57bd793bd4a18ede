// Times as the monitoring room reads them: Western Indonesia Time, whatever the browser's zone.

import { lang } from './i18n.js';

export const ZONE = 'Asia/Jakarta';
const OFFSET = '+07:00'; // WIB has no daylight saving time
const formats = new Map();

function format(kind) {
  const key = `${lang()}:${kind}`;
  if (!formats.has(key)) {
    const locale = lang() === 'en' ? 'en-GB' : 'id-ID';
    const options = {
      time: { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' },
      seconds: { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' },
      date: { day: 'numeric', month: 'short', year: 'numeric', hour: '2-digit',
              minute: '2-digit', hourCycle: 'h23' },
    }[kind];
    formats.set(key, new Intl.DateTimeFormat(locale, { ...options, timeZone: ZONE }));
  }
  return formats.get(key);
}

function toDate(value) {
  if (value === null || value === undefined) return null;
  const date = value instanceof Date ? value : new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

// "06:05 WIB"
export function clock(value) {
  const date = toDate(value);
  return date === null ? '–' : `${format('time').format(date).replace('.', ':')} WIB`;
}

export function clockSeconds(value) {
  const date = toDate(value);
  return date === null ? '–' : `${format('seconds').format(date).replaceAll('.', ':')} WIB`;
}

// "1 Jan 2020 06:00 WIB"
export function dateTime(value) {
  const date = toDate(value);
  if (date === null) return '–';
  const parts = format('date').formatToParts(date);
  const get = (type) => parts.find((part) => part.type === type)?.value ?? '';
  return `${get('day')} ${get('month').replace('.', '')} ${get('year')} ` +
    `${get('hour')}:${get('minute')} WIB`;
}

// Today's date in WIB for a reading of yesterday: "1 Jan 06:00 WIB" reads better than a time
// that looks like today's; within the last 20 hours, the time alone.
export function when(value, nowMs = Date.now()) {
  const date = toDate(value);
  if (date === null) return '–';
  return nowMs - date.getTime() < 20 * 3600 * 1000 ? clock(date) : dateTime(date);
}

// A datetime-local input's "2020-01-01T06:00" is read as WIB: "2020-01-01T06:00:00+07:00".
export function inputAsWib(value) {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$/.test(value)) return null;
  return `${value.length === 16 ? `${value}:00` : value}${OFFSET}`;
}

// The value a datetime-local input shows for a moment, in WIB.
export function wibInput(value) {
  const date = toDate(value) ?? new Date();
  const shifted = new Date(date.getTime() + 7 * 3600 * 1000);
  return shifted.toISOString().slice(0, 16);
}
