// transfer.js, served at <mount>/ui/transfer.js: import with a dry-run preview first, and export.
// Browser code, sent as written (no template literals).
export const TRANSFER_JS = String.raw`
import { request } from './api.js';
import { announce, alertError, count, field, focusOn, h, select, table } from './dom.js';
import { KINDS } from './tombstones.js';

const TYPES = { csv: 'text/csv', ndjson: 'application/x-ndjson', json: 'application/json' };
const FORMATS = [['csv', 'CSV'], ['ndjson', 'NDJSON'], ['json', 'JSON']];

/** The import and export screen, drawn into view. */
export function transferScreen(view) {
  const heading = h('h2', { id: 'screen-title', text: 'Import and export' });

  // Import: the content is checked (a dry run, nothing written) before it can be imported, and
  // any change to it asks for a new check.
  const file = h('input', { type: 'file', name: 'file', accept: '.csv,.ndjson,.jsonl,.json,text/csv,application/json' });
  const pasted = h('textarea', { name: 'content', rows: 8, spellcheck: 'false' });
  const format = select('format', FORMATS, 'csv');
  const check = h('button', { type: 'submit', text: 'Check (dry run)' });
  const importButton = h('button', { type: 'button', class: 'primary', text: 'Import', disabled: true });
  const preview = h('div', { class: 'preview' });
  const importForm = h(
    'form',
    { class: 'import', 'aria-labelledby': 'import-title' },
    h('h3', { id: 'import-title', text: 'Import' }),
    h('p', { class: 'intro', text: 'Upserts: a key that has a tombstone is replaced. Check the file first: nothing is written until you import.' }),
    field('File', file),
    field('Or paste the rows', pasted, 'CSV with a header row (scope, type, key, kind, target, permanent, reason, alternative, expiresAt), NDJSON, or a JSON array.'),
    field('Format', format),
    h('div', { class: 'actions' }, check, importButton),
    preview,
  );
  let checked = null;

  async function content() {
    const chosen = file.files && file.files[0];
    return chosen ? chosen.text() : pasted.value;
  }
  const invalidate = () => {
    checked = null;
    importButton.disabled = true;
  };
  file.addEventListener('change', () => {
    const name = file.files && file.files[0] ? file.files[0].name.toLowerCase() : '';
    if (name.endsWith('.ndjson') || name.endsWith('.jsonl')) format.value = 'ndjson';
    else if (name.endsWith('.json')) format.value = 'json';
    else if (name.endsWith('.csv')) format.value = 'csv';
    invalidate();
  });
  pasted.addEventListener('input', invalidate);
  format.addEventListener('change', invalidate);

  function send(body, dryRun) {
    return request('tombstones/import', { method: 'POST', query: { dryRun: dryRun ? 'true' : undefined }, body, contentType: TYPES[format.value] });
  }

  importForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = await content();
    if (!body.trim()) {
      alertError('Choose a file or paste the rows to import.');
      focusOn(file);
      return;
    }
    try {
      const report = await send(body, true);
      const title = h('h4', { id: 'preview-title', text: report.errorCount ? 'Dry run: ' + count(report.errorCount, 'row needs', 'rows need') + ' fixing' : 'Dry run: ready to import' });
      preview.replaceChildren(
        title,
        h(
          'p',
          { text: count(report.rows, 'row') + ': ' + report.created + ' would be created, ' + report.updated + ' would replace a tombstone, ' + count(report.errorCount, 'error') + '. Nothing was written.' },
        ),
        report.errors.length ? table('Rows with errors', ['Row', 'Field', 'Reason'], report.errors.map((error) => [String(error.row), error.field || '', error.reason])) : null,
      );
      checked = report.errorCount ? null : body;
      importButton.disabled = !checked;
      announce(report.errorCount ? 'Dry run: ' + count(report.errorCount, 'error') + '; nothing was written.' : 'Dry run passed: ' + count(report.rows, 'row') + ' ready to import.');
      focusOn(title);
    } catch (error) {
      preview.replaceChildren();
      if (!error.unauthenticated) alertError('The check failed: ' + error.message);
    }
  });

  importButton.addEventListener('click', async () => {
    if (!checked) return;
    try {
      const report = await send(checked, false);
      const title = h('h4', { id: 'preview-title', text: 'Imported' });
      preview.replaceChildren(title, h('p', { text: count(report.rows, 'row') + ': ' + report.created + ' created, ' + report.updated + ' replaced.' }));
      invalidate();
      announce('Imported ' + count(report.rows, 'row') + ': ' + report.created + ' created, ' + report.updated + ' replaced.');
      focusOn(title);
    } catch (error) {
      if (!error.unauthenticated) alertError('The import failed, nothing was written: ' + error.message);
    }
  });

  // Export: fetched with the credentials (a plain link could not carry a bearer token), then
  // handed to the browser as a download.
  const exportFormat = select('format', FORMATS, 'csv');
  const exportType = h('input', { name: 'type', autocomplete: 'off' });
  const exportKind = select('kind', [['', 'Any'], ...KINDS], '');
  const exportForm = h(
    'form',
    { class: 'export', 'aria-labelledby': 'export-title' },
    h('h3', { id: 'export-title', text: 'Export' }),
    field('Format', exportFormat),
    field('Type', exportType, 'Empty: every type.'),
    field('Kind', exportKind),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', text: 'Download' })),
  );
  exportForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const response = await request('tombstones/export', { query: { format: exportFormat.value, type: exportType.value.trim(), kind: exportKind.value }, raw: true });
      const blob = await response.blob();
      const link = h('a', { href: URL.createObjectURL(blob), download: 'tombstones.' + exportFormat.value, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 60000);
      announce('Downloaded tombstones.' + exportFormat.value + '.');
    } catch (error) {
      if (!error.unauthenticated) alertError('The export failed: ' + error.message);
    }
  });

  view.replaceChildren(heading, importForm, exportForm);
  return { heading };
}
`;
