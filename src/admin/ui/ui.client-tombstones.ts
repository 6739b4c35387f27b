// tombstones.js, served at <mount>/ui/tombstones.js: list, search and filter tombstones with
// cursor paging; create, edit, restore. Browser code, sent as written (no template literals).
export const TOMBSTONES_JS = String.raw`
import { request } from './api.js';
import { announce, alertError, count, field, focusOn, formDialog, h, pagedList, select, table, when } from './dom.js';

export const PAGE_SIZE = 20;

export const KINDS = [
  ['deleted', 'Gone (410)'],
  ['hidden', 'Hidden (404)'],
  ['moved', 'Moved (redirect)'],
  ['merged', 'Merged (redirect)'],
];
const KIND_LABELS = Object.fromEntries(KINDS);
const REDIRECTS = ['moved', 'merged'];

/** The tombstones screen, drawn into view. */
export function tombstonesScreen(view) {
  const filters = { keyPrefix: '', type: '', scope: '', kind: '' };

  const heading = h('h2', { id: 'screen-title', text: 'Tombstones' });
  const create = h('button', { type: 'button', class: 'primary', text: 'New tombstone' });
  const filterForm = h(
    'form',
    { role: 'search', 'aria-label': 'Filter tombstones', class: 'filters' },
    field('Key starts with', h('input', { name: 'keyPrefix', type: 'search', autocomplete: 'off' })),
    field('Type', h('input', { name: 'type', autocomplete: 'off' })),
    field('Scope', h('input', { name: 'scope', autocomplete: 'off' })),
    field('Kind', select('kind', [['', 'Any'], ...KINDS], '')),
    h('div', { class: 'actions' }, h('button', { type: 'submit', text: 'Search' }), h('button', { type: 'reset', text: 'Clear' })),
  );
  const results = h('div', { class: 'results' });
  const { nav, load } = pagedList({
    label: 'Pages of tombstones',
    filterForm,
    filters,
    fetchPage: (cursor) => request('tombstones', { query: { ...filters, limit: PAGE_SIZE, cursor } }),
    show: (items) =>
      results.replaceChildren(
        items.length
          ? table(
              'Tombstones, newest first (' + items.length + ' on this page)',
              ['Key', 'Type', 'Scope', 'Answer', 'Leads to', 'Reason', 'Hits', 'Last hit', 'Actions'],
              items.map(row),
            )
          : h('p', { class: 'empty', text: 'No tombstone matches.' }),
      ),
    failed: (error) => {
      if (!error.unauthenticated) alertError('Could not list the tombstones: ' + error.message);
    },
    counted: (n) => count(n, 'tombstone'),
    noMatch: 'No tombstone matches.',
  });
  view.replaceChildren(h('div', { class: 'screen-head' }, heading, create), filterForm, results, nav);

  function row(item) {
    const edit = h('button', { type: 'button', text: 'Edit', 'aria-label': 'Edit ' + item.key });
    const restore = h('button', { type: 'button', text: 'Restore', 'aria-label': 'Restore ' + item.key });
    edit.addEventListener('click', () => editDialog(item, edit));
    restore.addEventListener('click', () => restoreDialog(item, restore));
    return [
      h('span', { class: 'key', text: item.key }),
      item.type,
      item.scope || '(none)',
      KIND_LABELS[item.kind] || item.kind,
      REDIRECTS.includes(item.kind) ? item.target : item.alternative || '',
      item.reason || '',
      String(item.hitCount ?? 0),
      when(item.lastHitAt),
      h('div', { class: 'row-actions' }, edit, restore),
    ];
  }

  create.addEventListener('click', () => createDialog(create));

  /** After a change: the list again, the news read out, focus on the screen's heading. */
  async function changed(message) {
    await load();
    announce(message);
    focusOn(heading);
  }

  function createDialog(opener) {
    const fields = tombstoneFields({ kind: 'deleted', permanent: true }, true);
    formDialog({
      title: 'New tombstone',
      fields,
      submitLabel: 'Create',
      opener,
      onSubmit: async (form) => {
        const created = await request('tombstones', { method: 'POST', json: bodyOf(form, true) });
        return () => changed('Created the tombstone of ' + created.key + '.');
      },
    });
  }

  function editDialog(item, opener) {
    formDialog({
      title: 'Edit ' + item.key,
      description: 'Type ' + item.type + (item.scope ? ', scope ' + item.scope : '') + '. The key, type and scope stay.',
      fields: tombstoneFields(item, false),
      submitLabel: 'Save',
      opener,
      onSubmit: async (form) => {
        await request('tombstones/' + encodeURIComponent(item.id), { method: 'PATCH', json: bodyOf(form, false) });
        return () => changed('Saved ' + item.key + '.');
      },
    });
  }

  function restoreDialog(item, opener) {
    formDialog({
      title: 'Restore ' + item.key + '?',
      description: 'Its tombstone is deleted: the key answers for itself again (the resource, or a plain 404).',
      fields: [],
      submitLabel: 'Restore',
      opener,
      onSubmit: async () => {
        await request('tombstones/' + encodeURIComponent(item.id), { method: 'DELETE' });
        return () => changed('Restored ' + item.key + ': its tombstone is deleted.');
      },
    });
  }

  void load();
  return { heading };
}

/** The fields of a tombstone form; the key, type and scope only when creating. */
export function tombstoneFields(item, creating) {
  const kind = select('kind', KINDS, item.kind);
  const target = field('Target key', h('input', { name: 'target', value: item.target || '', autocomplete: 'off' }), 'The key it leads to.');
  const permanent = h(
    'div',
    { class: 'field checkbox' },
    h('input', { type: 'checkbox', name: 'permanent', id: 'permanent-' + (item.id || 'new'), checked: item.permanent !== false }),
    h('label', { for: 'permanent-' + (item.id || 'new'), text: 'Permanent (301/308; otherwise 302/307)' }),
  );
  const alternative = field('Alternative link', h('input', { name: 'alternative', value: item.alternative || '', autocomplete: 'off' }), 'A path such as /articles/current, offered with the 410.');
  const show = () => {
    const redirect = REDIRECTS.includes(kind.value);
    target.hidden = !redirect;
    permanent.hidden = !redirect;
    alternative.hidden = kind.value !== 'deleted';
  };
  kind.addEventListener('change', show);
  show();
  return [
    creating ? field('Type', h('input', { name: 'type', required: true, autocomplete: 'off' }), 'The resource type, as in @Tombstoned(type): article.') : null,
    creating ? field('Key', h('input', { name: 'key', required: true, autocomplete: 'off' })) : null,
    creating ? field('Scope', h('input', { name: 'scope', autocomplete: 'off' }), 'Empty when unscoped.') : null,
    field('Answer', kind),
    target,
    permanent,
    field('Reason', h('textarea', { name: 'reason', rows: 2, value: item.reason || '' })),
    alternative,
    field('Expires at', h('input', { name: 'expiresAt', value: item.expiresAt || '', autocomplete: 'off' }), 'ISO 8601, e.g. 2027-01-01T00:00:00Z; empty: never.'),
  ];
}

/** The JSON body of a tombstone form: only the fields the kind takes; an empty field is none. */
export function bodyOf(form, creating) {
  const text = (name) => {
    const control = form.elements.namedItem(name);
    return control ? control.value.trim() : '';
  };
  const kind = text('kind');
  const body = { kind };
  // On an update, an empty optional field clears it (null); on a create it is left out.
  const none = creating ? undefined : null;
  if (creating) {
    body.type = text('type');
    body.key = form.elements.namedItem('key').value;
    if (text('scope')) body.scope = text('scope');
  }
  if (REDIRECTS.includes(kind)) {
    body.target = text('target');
    body.permanent = form.elements.namedItem('permanent').checked;
  }
  body.reason = text('reason') || none;
  if (kind === 'deleted') body.alternative = text('alternative') || none;
  else if (!creating) body.alternative = null;
  body.expiresAt = text('expiresAt') || none;
  return body;
}
`;
