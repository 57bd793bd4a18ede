// The operator's token: typed into a dialog, kept for this tab only (sessionStorage), sent only
// in the Authorization header of the API's POSTs. Without one the page is read-only.

const TOKEN = 'siaga.token';
const OPERATOR = 'siaga.operator';
const listeners = [];

function read(key) {
  try {
    return window.sessionStorage.getItem(key) || '';
  } catch {
    return '';
  }
}

function write(key, value) {
  try {
    if (value) window.sessionStorage.setItem(key, value);
    else window.sessionStorage.removeItem(key);
  } catch {
    // storage refused: the token lives as long as this call
  }
}

export function hasToken() {
  return read(TOKEN) !== '';
}

// Who acknowledges or silences: the name typed with the token, else "konsol".
export function operator() {
  return read(OPERATOR) || 'konsol';
}

export function signIn(token, name) {
  write(TOKEN, token.trim());
  write(OPERATOR, name.trim());
  notify();
}

export function signOut() {
  write(TOKEN, '');
  notify();
}

export function onAuth(listener) {
  listeners.push(listener);
}

function notify() {
  for (const listener of listeners) listener(hasToken());
}

export class AuthError extends Error {}

// POST a JSON body with the bearer token; a 401 forgets the token (it was wrong or revoked).
export async function post(path, body) {
  const token = read(TOKEN);
  if (!token) throw new AuthError('no token');
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
    credentials: 'omit',
    cache: 'no-store',
  });
  if (response.status === 401) {
    signOut();
    throw new AuthError('token refused');
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || answer.detail || `HTTP ${response.status}`);
  return answer;
}
