// Small DOM helpers. Everything the console shows is built with createElement and text nodes:
// no innerHTML with data, so nothing a tablet sends can become markup (and the CSP forbids
// inline scripts and styles anyway).

const SVG_NS = 'http://www.w3.org/2000/svg';

function append(parent, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(parent, c);
    else if (c instanceof Node) parent.appendChild(c);
    else parent.appendChild(document.createTextNode(String(c)));
  }
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.setAttribute('class', Array.isArray(v) ? v.filter(Boolean).join(' ') : v);
    else if (k === 'text') el.textContent = v;
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'style') throw new Error('inline styles are not allowed (CSP): use a class');
    else if (k === 'value' && 'value' in el) el.value = v;
    else if (k === 'checked' || k === 'selected' || k === 'disabled' || k === 'hidden' || k === 'required') {
      el[k] = Boolean(v);
    } else el.setAttribute(k, v === true ? '' : String(v));
  }
}

/** h('p', {class: 'x'}, 'text', child, [more]) -> HTMLElement */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** The same for SVG elements (charts). */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

let uid = 0;
/** A unique id for label/for and aria-describedby pairs. */
export function nextId(prefix = 'f') {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled form control: returns {wrap, control}. */
export function field(labelText, control, hint) {
  if (!control.id) control.id = nextId();
  const parts = [h('label', {for: control.id}, labelText), control];
  if (hint) {
    const hid = nextId('hint');
    control.setAttribute('aria-describedby', hid);
    parts.push(h('span', {class: 'hint', id: hid}, hint));
  }
  return {wrap: h('div', {class: 'field'}, parts), control};
}

export function select(options, value, attrs = {}) {
  const el = h('select', attrs);
  for (const o of options) {
    const opt = h('option', {value: o.value}, o.label);
    if (String(o.value) === String(value ?? '')) opt.selected = true;
    el.appendChild(opt);
  }
  return el;
}
