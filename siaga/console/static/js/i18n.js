// The page's two languages: Indonesian by default, English on request, kept per browser.

const KEY = 'siaga.lang';
const LANGUAGES = ['id', 'en'];
const messages = { id: {}, en: {} };
const listeners = [];
let current = 'id';

export function lang() {
  return current;
}

export function storedLanguage() {
  try {
    const stored = window.localStorage.getItem(KEY);
    return LANGUAGES.includes(stored) ? stored : null;
  } catch {
    return null; // storage refused (privacy settings): the default then
  }
}

async function load(language) {
  if (Object.keys(messages[language]).length > 0) return;
  const response = await fetch(`/console/static/i18n/${language}.json`);
  if (!response.ok) throw new Error(`messages ${language}: HTTP ${response.status}`);
  messages[language] = await response.json();
}

// t('reports.cluster', {n: 3}): "{n}" placeholders; a missing key shows itself, never blank.
export function t(key, params = {}) {
  const text = messages[current][key] ?? messages.id[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

export function has(key) {
  return key in messages[current] || key in messages.id;
}

export function translate(root = document) {
  for (const node of root.querySelectorAll('[data-i18n]')) {
    node.textContent = t(node.dataset.i18n);
  }
  for (const node of root.querySelectorAll('[data-i18n-placeholder]')) {
    node.setAttribute('placeholder', t(node.dataset.i18nPlaceholder));
  }
  for (const node of root.querySelectorAll('[data-i18n-title]')) {
    node.setAttribute('title', t(node.dataset.i18nTitle));
  }
  for (const node of root.querySelectorAll('[data-i18n-label]')) {
    node.setAttribute('aria-label', t(node.dataset.i18nLabel));
  }
}

export async function setLanguage(language, { remember = true } = {}) {
  if (!LANGUAGES.includes(language)) return;
  await Promise.all([load('id'), load(language)]);
  current = language;
  document.documentElement.lang = language;
  if (remember) {
    try {
      window.localStorage.setItem(KEY, language);
    } catch {
      // not kept across reloads then; the page still switches
    }
  }
  translate();
  for (const listener of listeners) listener(language);
}

export function onLanguage(listener) {
  listeners.push(listener);
}
