// DOM built from nodes and text only: no HTML strings anywhere in the console (plan section 6).
// Every value from the service (device names, report descriptions, alert summaries) is text.

const ATTRIBUTES = new Set([
  'class', 'id', 'type', 'name', 'value', 'title', 'role', 'for', 'placeholder', 'min', 'max',
  'step', 'hidden', 'disabled', 'colspan', 'tabindex', 'lang', 'datetime', 'selected',
  'required', 'rows', 'autocomplete', 'scope', 'href', 'lang', 'dir', 'maxlength', 'checked',
]);

function allowed(name) {
  return ATTRIBUTES.has(name) || name.startsWith('data-') || name.startsWith('aria-');
}

// el('tr', {'data-device-id': id}, cell1, 'text', ...): children are nodes or strings (text).
// A false, null or undefined attribute is left out; true gives an empty (boolean) attribute.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (!allowed(name)) throw new Error(`attribute not allowed: ${name}`);
    if (value === false || value === null || value === undefined) continue;
    if (name === 'href' && !String(value).startsWith('/')) throw new Error('only local links');
    node.setAttribute(name, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

export function $$(selector, root = document) {
  return Array.from(root.querySelectorAll(selector));
}

// Attribute writes that skip an unchanged value: at 10,000 rows, not touching the DOM is the
// cheapest update there is.
export function setData(node, name, value) {
  const text = String(value);
  if (node.getAttribute(name) !== text) node.setAttribute(name, text);
}
