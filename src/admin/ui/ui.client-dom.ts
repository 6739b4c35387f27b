// dom.js, served at <mount>/ui/dom.js: builds the page with DOM APIs only. Every value is set as
// text (textContent, Text nodes, attributes): nothing is ever parsed as HTML, so a key or a reason
// full of markup shows as what it is. Browser code, sent as written (no template literals).
export const DOM_JS = String.raw`
let ids = 0;

/** A fresh id for label/aria wiring. */
export function uid(prefix) {
  ids += 1;
  return prefix + '-' + ids;
}

/**
 * An element: h('button', { type: 'button', onclick }, 'Save'). Props: text (its text), class,
 * on<event> listeners, value/checked/hidden/disabled as properties, anything else as an attribute.
 * Children are nodes or strings (added as Text nodes).
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'innerHTML' || name === 'outerHTML') throw new Error('dom.js sets text only');
    if (name === 'text') element.textContent = String(value);
    else if (name === 'class') element.className = value;
    else if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (name === 'value' || name === 'checked' || name === 'hidden' || name === 'disabled' || name === 'selected') element[name] = value;
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child !== undefined && child !== null && child !== false) element.append(child);
  }
  return element;
}

/** A labelled control: <div class="field"><label>…</label>control<p class="hint">…</p></div>. */
export function field(label, control, hint) {
  control.id = control.id || uid('field');
  const wrapper = h('div', { class: 'field' }, h('label', { for: control.id, text: label }), control);
  if (hint) {
    const hintId = uid('hint');
    control.setAttribute('aria-describedby', hintId);
    wrapper.append(h('p', { class: 'hint', id: hintId, text: hint }));
  }
  return wrapper;
}

/** A select from [value, label] pairs. */
export function select(name, options, selected) {
  return h('select', { name }, options.map(([value, label]) => h('option', { value, selected: value === selected, text: label })));
}

/**
 * A data table: a caption, column headers (th scope=col), and rows whose first cell is the row's
 * header (th scope=row). Cells are strings or nodes.
 */
export function table(caption, headers, rows) {
  return h(
    'table',
    {},
    h('caption', { text: caption }),
    h('thead', {}, h('tr', {}, headers.map((header) => h('th', { scope: 'col', text: header })))),
    h(
      'tbody',
      {},
      rows.map((cells) => h('tr', {}, cells.map((cell, index) => h(index === 0 ? 'th' : 'td', index === 0 ? { scope: 'row' } : {}, cell)))),
    ),
  );
}

/** Says something to everyone: shown, and read out by screen readers (role=status, polite). */
export function announce(message) {
  const status = document.getElementById('status');
  document.getElementById('alert').textContent = '';
  status.textContent = '';
  // A new text node, so that a repeated message is read again.
  status.append(document.createTextNode(message));
}

/** An error, read out at once (role=alert). */
export function alertError(message) {
  document.getElementById('status').textContent = '';
  document.getElementById('alert').textContent = message;
}

/** Moves focus to an element that is not otherwise focusable (a heading), for screen readers. */
export function focusOn(element) {
  if (!element) return;
  if (!element.hasAttribute('tabindex') && !/^(A|BUTTON|INPUT|SELECT|TEXTAREA)$/.test(element.tagName)) element.setAttribute('tabindex', '-1');
  element.focus();
}

/** A count with its noun: count(1, 'row') is '1 row', count(2, 'row') '2 rows'. */
export function count(n, singular, plural = singular + 's') {
  return n + ' ' + (n === 1 ? singular : plural);
}

/** A date as YYYY-MM-DD HH:MM UTC (the same for every operator), or an empty string. */
export function when(value) {
  return value ? new Date(value).toISOString().slice(0, 16).replace('T', ' ') + ' UTC' : '';
}

/**
 * A filtered list in keyset pages: the filter form's Search and Clear, and Previous and Next
 * under the list with the page number, each read out. fetchPage(cursor) gives { items,
 * nextCursor } for the current filters; show(items) draws a page; failed(error) reports a page
 * that could not be had; counted(n) names n items. Returns the pager's nav, and load(), which
 * draws the current page again and resolves to its items (none when it failed).
 */
export function pagedList({ label, filterForm, filters, fetchPage, show, failed, counted, noMatch }) {
  // The cursors of the pages walked so far (the first page has none).
  let cursors = [undefined];
  let page = 0;
  const previous = h('button', { type: 'button', text: 'Previous page', disabled: true });
  const next = h('button', { type: 'button', text: 'Next page', disabled: true });
  const pageLabel = h('span', { class: 'page-label' });
  const nav = h('nav', { 'aria-label': label, class: 'pager' }, previous, pageLabel, next);

  async function load() {
    try {
      const { items, nextCursor } = await fetchPage(cursors[page]);
      cursors = cursors.slice(0, page + 1);
      if (nextCursor) cursors.push(nextCursor);
      previous.disabled = page === 0;
      next.disabled = !nextCursor;
      pageLabel.textContent = 'Page ' + (page + 1);
      show(items);
      return items;
    } catch (error) {
      failed(error);
      return [];
    }
  }

  async function turn(by, button, other) {
    page += by;
    const items = await load();
    announce('Page ' + (page + 1) + ': ' + counted(items.length) + '.');
    if (button.disabled) other.focus();
  }

  filterForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(filterForm);
    for (const name of Object.keys(filters)) filters[name] = String(data.get(name) ?? '').trim();
    cursors = [undefined];
    page = 0;
    const items = await load();
    announce(items.length ? counted(items.length) + ' on page 1.' : noMatch);
  });
  filterForm.addEventListener('reset', () => {
    for (const name of Object.keys(filters)) filters[name] = '';
    cursors = [undefined];
    page = 0;
    void load();
  });
  next.addEventListener('click', () => turn(1, next, previous));
  previous.addEventListener('click', () => turn(-1, previous, next));
  return { nav, load };
}

/**
 * A modal form (a native <dialog>: it keeps focus inside, Escape closes it). onSubmit(form) may
 * answer a function, called once the dialog is closed (to say what happened and move focus), or
 * throw an ApiError: its message is shown in the dialog (role=alert), the fields it names are
 * marked aria-invalid, and focus goes to the first of them. Focus returns to the opener when the
 * dialog is cancelled; after a success the caller says where it goes.
 */
export function formDialog({ title, fields, submitLabel, onSubmit, opener, description }) {
  const titleId = uid('dialog-title');
  const error = h('p', { class: 'error', role: 'alert' });
  const submit = h('button', { type: 'submit', class: 'primary', text: submitLabel });
  const cancel = h('button', { type: 'button', text: 'Cancel' });
  const descriptionId = description ? uid('dialog-description') : undefined;
  const form = h(
    'form',
    { novalidate: true },
    h('h2', { id: titleId, text: title }),
    description ? h('p', { id: descriptionId, text: description }) : null,
    fields,
    error,
    h('div', { class: 'actions' }, submit, cancel),
  );
  const dialog = h('dialog', { 'aria-labelledby': titleId, 'aria-describedby': descriptionId }, form);
  let done = false;
  cancel.addEventListener('click', () => dialog.close());
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    for (const invalid of form.querySelectorAll('[aria-invalid]')) invalid.removeAttribute('aria-invalid');
    submit.disabled = true;
    try {
      const then = await onSubmit(form);
      done = true;
      // Closed first: a closing dialog hands focus back to where it was before it opened.
      dialog.close();
      if (typeof then === 'function') await then();
    } catch (failure) {
      if (!dialog.open) return;
      error.textContent = failure.message;
      const named = (failure.fieldErrors || []).map((entry) => form.elements.namedItem(entry.field)).filter(Boolean);
      for (const control of named) control.setAttribute('aria-invalid', 'true');
      (named[0] || submit).focus();
    } finally {
      submit.disabled = false;
    }
  });
  dialog.addEventListener('close', () => {
    dialog.remove();
    if (!done && opener && opener.isConnected) opener.focus();
  });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

/** Closes every open dialog (credentials refused: nothing stays on screen). */
export function closeDialogs() {
  for (const dialog of document.querySelectorAll('dialog')) dialog.close();
}
`;
