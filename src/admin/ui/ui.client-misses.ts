// misses.js, served at <mount>/ui/misses.js: the misses log, most missed first, with one action
// to turn a miss into a redirect or a 410. Browser code, sent as written (no template literals).
export const MISSES_JS = String.raw`
import { request } from './api.js';
import { announce, alertError, count, field, focusOn, formDialog, h, pagedList, table, when } from './dom.js';
import { suggestTargets } from './suggest.js';
import { PAGE_SIZE } from './tombstones.js';

/** The misses screen, drawn into view. */
export function missesScreen(view) {
  const filters = { keyPrefix: '', type: '', scope: '', minHits: '' };

  const heading = h('h2', { id: 'screen-title', text: 'Misses' });
  const intro = h('p', { class: 'intro', text: 'The 404s no tombstone explained, most missed first (the module logs them with its missLog option).' });
  const filterForm = h(
    'form',
    { role: 'search', 'aria-label': 'Filter misses', class: 'filters' },
    field('Key starts with', h('input', { name: 'keyPrefix', type: 'search', autocomplete: 'off' })),
    field('Type', h('input', { name: 'type', autocomplete: 'off' })),
    field('Scope', h('input', { name: 'scope', autocomplete: 'off' })),
    field('At least this many hits', h('input', { name: 'minHits', type: 'number', min: 1, inputmode: 'numeric' })),
    h('div', { class: 'actions' }, h('button', { type: 'submit', text: 'Search' }), h('button', { type: 'reset', text: 'Clear' })),
  );
  const results = h('div', { class: 'results' });
  const { nav, load } = pagedList({
    label: 'Pages of misses',
    filterForm,
    filters,
    fetchPage: (cursor) => request('tombstone-misses', { query: { ...filters, sort: 'hits', limit: PAGE_SIZE, cursor } }),
    show: (items) =>
      results.replaceChildren(
        items.length
          ? table('Misses, most missed first', ['Key', 'Type', 'Scope', 'Hits', 'Last seen', 'Last referrer', 'Actions'], items.map(row))
          : h('p', { class: 'empty', text: 'No miss logged.' }),
      ),
    failed: (error) => {
      if (!error.unauthenticated) alertError('Could not list the misses: ' + error.message);
    },
    counted: (n) => count(n, 'miss', 'misses'),
    noMatch: 'No miss matches.',
  });
  view.replaceChildren(heading, intro, filterForm, results, nav);

  function row(miss) {
    const redirect = h('button', { type: 'button', text: 'Redirect…', 'aria-label': 'Redirect ' + miss.key });
    const gone = h('button', { type: 'button', text: 'Mark gone (410)…', 'aria-label': 'Mark ' + miss.key + ' gone (410)' });
    const dismiss = h('button', { type: 'button', text: 'Dismiss', 'aria-label': 'Dismiss ' + miss.key });
    redirect.addEventListener('click', () => redirectDialog(miss, redirect));
    gone.addEventListener('click', () => goneDialog(miss, gone));
    dismiss.addEventListener('click', async () => {
      try {
        await request('tombstone-misses/' + encodeURIComponent(miss.id), { method: 'DELETE' });
        await changed('Dismissed ' + miss.key + ' (it is logged again at its next 404).');
      } catch (error) {
        if (!error.unauthenticated) alertError('Could not dismiss ' + miss.key + ': ' + error.message);
      }
    });
    return [
      h('span', { class: 'key', text: miss.key }),
      miss.type,
      miss.scope || '(none)',
      String(miss.hits),
      when(miss.lastSeen),
      miss.lastReferrer || '',
      h('div', { class: 'row-actions' }, redirect, gone, dismiss),
    ];
  }

  async function changed(message) {
    await load();
    announce(message);
    focusOn(heading);
  }

  function resolve(miss, body) {
    return request('tombstone-misses/' + encodeURIComponent(miss.id) + '/resolve', { method: 'POST', json: body });
  }

  function redirectDialog(miss, opener) {
    const target = h('input', { name: 'target', required: true, autocomplete: 'off' });
    const permanent = h('input', { type: 'checkbox', name: 'permanent', id: 'miss-permanent', checked: true });
    const suggestions = h('ul', { class: 'suggestions', 'aria-label': 'Suggested targets' });
    const suggestionsBox = h('div', { class: 'field', hidden: true }, h('p', { class: 'hint', text: 'Suggested targets:' }), suggestions);
    formDialog({
      title: 'Redirect ' + miss.key,
      description: 'Type ' + miss.type + (miss.scope ? ', scope ' + miss.scope : '') + '. The key will redirect to the target key.',
      fields: [
        field('Target key', target, 'The key it should lead to.'),
        suggestionsBox,
        h('div', { class: 'field checkbox' }, permanent, h('label', { for: 'miss-permanent', text: 'Permanent (301/308; otherwise 302/307)' })),
      ],
      submitLabel: 'Create redirect',
      opener,
      onSubmit: async () => {
        const created = await resolve(miss, { kind: 'moved', target: target.value.trim(), permanent: permanent.checked });
        return () => changed(miss.key + ' now redirects to ' + created.target + '.');
      },
    });
    suggestTargets({ id: miss.id, scope: miss.scope, type: miss.type, key: miss.key }).then(
      (keys) => {
        suggestions.replaceChildren(
          ...keys.map((key) =>
            h('li', {}, h('button', { type: 'button', class: 'link', text: key, 'aria-label': 'Use ' + key, onclick: () => { target.value = key; target.focus(); } })),
          ),
        );
        suggestionsBox.hidden = keys.length === 0;
      },
      () => {
        suggestionsBox.hidden = true;
      },
    );
  }

  function goneDialog(miss, opener) {
    const reason = h('textarea', { name: 'reason', rows: 2 });
    const alternative = h('input', { name: 'alternative', autocomplete: 'off' });
    formDialog({
      title: 'Mark ' + miss.key + ' gone',
      description: 'Type ' + miss.type + (miss.scope ? ', scope ' + miss.scope : '') + '. The key will answer 410 Gone.',
      fields: [field('Reason', reason), field('Alternative link', alternative, 'A path such as /articles/current, offered with the 410.')],
      submitLabel: 'Mark gone',
      opener,
      onSubmit: async () => {
        const body = { kind: 'deleted' };
        if (reason.value.trim()) body.reason = reason.value.trim();
        if (alternative.value.trim()) body.alternative = alternative.value.trim();
        await resolve(miss, body);
        return () => changed(miss.key + ' now answers 410 Gone.');
      },
    });
  }

  void load();
  return { heading };
}
`;
