import { Readable } from 'node:stream';
import { PayloadTooLargeException } from '@nestjs/common';
import { parse } from 'csv-parse/sync';
import { invalid } from '../admin.validation.js';

/** The columns an import reads; an export writes these and the read-only ones after them. */
export const IMPORT_COLUMNS = ['scope', 'type', 'key', 'kind', 'target', 'permanent', 'reason', 'alternative', 'expiresAt', 'prefix'] as const;
/** Written by an export, ignored by an import: what the table keeps for itself. */
export const READ_ONLY_COLUMNS = ['id', 'actor', 'occurredAt', 'hitCount', 'lastHitAt', 'createdAt', 'updatedAt'] as const;
export const KNOWN_COLUMNS = new Set<string>([...IMPORT_COLUMNS, ...READ_ONLY_COLUMNS]);

export const MAX_LINE_BYTES = 64 * 1024;

export type ImportFormat = 'csv' | 'ndjson' | 'json';

/** Records a problem of a row (1-based, as the answer lists it). */
export type Fail = (row: number, field: string, reason: string) => void;

/** The admin module's bounds on an import. */
export interface ImportLimits {
  maxImportRows: number;
  maxImportBytes: number;
}

/** Stands in for a CSV record once it is checked, so that it can be collected. */
const EMPTY: string[] = [];

/**
 * Hands each record of a body to `each`, with the line or position it came from, and whether
 * its fields are already known to be import columns (a CSV header was checked once).
 */
export async function readRecords(
  body: unknown,
  format: ImportFormat,
  fail: Fail,
  each: (line: number, record: Record<string, unknown>, columnsChecked: boolean) => void,
  limits: ImportLimits,
): Promise<void> {
  let count = 0;
  const counted = () => {
    if (++count > limits.maxImportRows) {
      throw new PayloadTooLargeException({
        statusCode: 413,
        error: 'Payload Too Large',
        message: `An import takes at most ${limits.maxImportRows} rows (the module option maxImportRows).`,
      });
    }
  };
  if (format === 'json') {
    if (!Array.isArray(body)) throw invalid('body', 'must be a JSON array of tombstones');
    for (const [i, record] of body.entries()) {
      counted();
      if (typeof record !== 'object' || record === null || Array.isArray(record)) fail(i + 1, 'row', 'must be an object');
      else each(i + 1, record as Record<string, unknown>, false);
    }
    return;
  }
  const stream = limited(body, limits.maxImportBytes);
  if (format === 'ndjson') {
    let line = 0;
    for await (const texts of linesOf(stream)) {
      for (const text of texts) {
        line++;
        if (text === null) {
          counted();
          fail(line, 'row', `is longer than ${MAX_LINE_BYTES} bytes`);
          continue;
        }
        if (text.trim() === '') continue;
        counted();
        let record: unknown;
        try {
          record = JSON.parse(text);
        } catch {
          fail(line, 'row', 'is not valid JSON');
          continue;
        }
        if (typeof record !== 'object' || record === null || Array.isArray(record)) fail(line, 'row', 'must be a JSON object');
        else each(line, record as Record<string, unknown>, false);
      }
    }
    return;
  }
  // The body is read whole (it is bounded by maxImportBytes) and parsed in one go: several
  // times faster than record by record through a stream.
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  let parsed: string[][];
  try {
    // Arrays, not objects: csv-parse is about three times faster without `columns` and `info`.
    parsed = parse(Buffer.concat(chunks), { bom: true, skip_empty_lines: true, max_record_size: MAX_LINE_BYTES }) as string[][];
  } catch (error) {
    const { lines, message } = error as { lines?: number; message?: string };
    throw invalid('body', `the CSV cannot be read${lines ? ` at line ${lines}` : ''}: ${String(message ?? error).slice(0, 200)}`);
  }
  chunks.length = 0;
  const header = parsed[0] ?? [];
  const unknown = header.filter((c) => !KNOWN_COLUMNS.has(c));
  if (unknown.length > 0) {
    throw invalid('columns', `unknown column(s): ${unknown.slice(0, 5).join(', ')}; known: ${[...KNOWN_COLUMNS].join(', ')}`);
  }
  // Where each import column is, last first: of a column given twice, the last value set counts.
  const at = (column: string) => header.flatMap((c, i) => (c === column ? [i] : [])).reverse();
  const [scope, type, key, kind, target, permanent, reason, alternative, expiresAt, prefix] = IMPORT_COLUMNS.map(at);
  for (let i = 1; i < parsed.length; i++) {
    counted();
    const values = parsed[i];
    parsed[i] = EMPTY;
    if (values.length !== header.length) {
      fail(i + 1, 'row', `has ${values.length} fields, the header ${header.length}`);
      continue;
    }
    // Every record has the same shape, whatever cells are empty: an empty cell is no value.
    each(
      i + 1,
      {
        scope: cell(values, scope),
        type: cell(values, type),
        key: cell(values, key),
        kind: cell(values, kind),
        target: cell(values, target),
        permanent: cell(values, permanent),
        reason: cell(values, reason),
        alternative: cell(values, alternative),
        expiresAt: cell(values, expiresAt),
        prefix: cell(values, prefix),
      },
      true,
    );
  }
}

/** The body as a stream that fails with 413 past the module's maxImportBytes. */
function limited(body: unknown, max: number): Readable {
  const source = body as Readable;
  if (!source || typeof source.pipe !== 'function') throw invalid('body', 'is empty');
  let total = 0;
  return Readable.from(
    (async function* () {
      for await (const chunk of source) {
        total += (chunk as Buffer).length;
        if (total > max) {
          throw new PayloadTooLargeException({
            statusCode: 413,
            error: 'Payload Too Large',
            message: `An import body is at most ${max} bytes (the module option maxImportBytes).`,
          });
        }
        yield chunk as Buffer;
      }
    })(),
  );
}

/** Of the cells at `at` (a column's positions, last first), the first that is not empty. */
function cell(values: string[], at: number[]): string | undefined {
  for (const i of at) if (values[i] !== '') return fromCsvSafe(values[i]);
  return undefined;
}

/**
 * First characters that make a spreadsheet read a cell as a formula (OWASP's CSV injection list),
 * and the quote that neutralises them, which must then be escaped itself.
 */
const FORMULA_START = /^[=+\-@\t\r']/;

/**
 * A text cell as a CSV export writes it: a value a spreadsheet would run as a formula (say, a key
 * renamed to `=HYPERLINK(…)`) gets a leading `'`, as OWASP recommends. `fromCsvSafe()` undoes it.
 */
export function csvSafe(value: string): string {
  return FORMULA_START.test(value) ? `'${value}` : value;
}

/**
 * A CSV cell as the import reads it: the `'` that `csvSafe()` put before a formula character (or
 * before another `'`) is dropped, so that an export imports back exactly. Any other cell is taken
 * as it is.
 */
export function fromCsvSafe(value: string): string {
  return value.length > 1 && value.charCodeAt(0) === 39 && FORMULA_START.test(value.slice(1)) ? value.slice(1) : value;
}

/**
 * The lines of a stream, decoded as UTF-8, a chunk's worth at a time; a line longer than the
 * limit is answered `null` and skipped without being kept in memory.
 */
async function* linesOf(stream: Readable): AsyncGenerator<(string | null)[]> {
  let first = true;
  // A line's text, without its CR, and without the byte order mark a first line may carry.
  const text = (bytes: Buffer) => {
    let line = bytes.toString('utf8');
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (!first) return line;
    first = false;
    return line.startsWith('\uFEFF') ? line.slice(1) : line;
  };
  let pending: Buffer[] = [];
  let size = 0;
  let tooLong = false;
  for await (const chunk of stream) {
    let data = chunk as Buffer;
    const lines: (string | null)[] = [];
    for (let at = data.indexOf(10); at !== -1; at = data.indexOf(10)) {
      const tail = data.subarray(0, at);
      if (tooLong || size + tail.length > MAX_LINE_BYTES) lines.push(null);
      else lines.push(text(pending.length === 0 ? tail : Buffer.concat([...pending, tail])));
      pending = [];
      size = 0;
      tooLong = false;
      data = data.subarray(at + 1);
    }
    if (lines.length > 0) yield lines;
    if (tooLong) continue;
    size += data.length;
    if (size > MAX_LINE_BYTES) {
      tooLong = true;
      pending = [];
    } else if (data.length > 0) pending.push(Buffer.from(data));
  }
  if (tooLong) yield [null];
  else if (size > 0) yield [text(Buffer.concat(pending))];
}
