import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isISO8601 } from 'class-validator';
import type { PoolClient } from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { EntityManager } from 'typeorm';
import { collapseChains } from '../../table/tombstone.chains.js';
import { isRedirect } from '../../table/tombstone.rows.js';
import { LIMITS } from '../../tombstone.constants.js';
import { TOMBSTONE_KINDS, type TombstoneKind } from '../../tombstone.types.js';
import { DOT_TARGET_REASON, isPrefixKey, isSafeLink, isStorableKey, isStorableScope, isTargetKey, isValidType, isWellFormed, PREFIX_KEY_REASON } from '../../tombstone.validation.js';
import { type Fail, KNOWN_COLUMNS } from './transfer.records.js';

/** Rows per piece of COPY data handed to the connection. */
const COPY_CHUNK = 2000;

export interface ImportRow {
  line: number;
  scope: string;
  type: string;
  key: string;
  kind: TombstoneKind;
  target: string | null;
  permanent: boolean;
  reason: string | null;
  alternative: string | null;
  /** As PostgreSQL reads it (see timestampText). */
  expiresAt: string | null;
  /** A prefix tombstone: it covers every key under `key`. */
  prefix: boolean;
}

/** The rows of a (scope, type) of a batch, by key. */
export interface Group {
  scope: string;
  type: string;
  keys: Map<string, ImportRow>;
}

/** The groups of a batch, by `scope \0 type`. */
export type Batch = Map<string, Group>;

/** Each kind as the one string it is everywhere, rather than the copy each row was read into. */
const KINDS = new Map<string, TombstoneKind>(TOMBSTONE_KINDS.map((kind) => [kind, kind]));

/** The create endpoint's rules, row by row; `null` (and the reasons given to `fail`) when the row is invalid. */
export function checkRow(
  record: Record<string, unknown>,
  line: number,
  columnsChecked: boolean,
  fail: Fail,
  alternativeHosts: readonly string[],
): ImportRow | null {
  let ok = true;
  const bad = (field: string, reason: string) => {
    ok = false;
    fail(line, field, reason);
  };
  if (!columnsChecked) for (const column of Object.keys(record)) if (!KNOWN_COLUMNS.has(column)) bad(column, 'is not a known field');
  const text = (value: unknown, field: string): string | undefined => {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'string') {
      bad(field, 'must be a string');
      return undefined;
    }
    return value;
  };
  const scope = text(record.scope, 'scope') ?? '';
  const type = text(record.type, 'type');
  const key = text(record.key, 'key');
  const given = text(record.kind, 'kind');
  const target = text(record.target, 'target');
  const reason = text(record.reason, 'reason') || undefined; // an empty reason is no reason, as on create
  const alternative = text(record.alternative, 'alternative');
  const expiresAt = text(record.expiresAt, 'expiresAt');
  if (scope !== '' && !isStorableScope(scope)) bad('scope', 'must be at most 256 bytes, without NUL characters');
  if (!isValidType(type)) bad('type', "must be a resource type: letters, digits, '_', '.', ':' or '-', at most 128");
  if (!isStorableKey(key)) bad('key', 'must be a key of 1 to 2048 bytes, without NUL characters');
  const kind = KINDS.get(given as string);
  if (!kind) bad('kind', `must be one of ${TOMBSTONE_KINDS.join(', ')}`);
  const redirect = isRedirect(kind);
  if (redirect && target === undefined) bad('target', `is required for a ${kind} tombstone`);
  if (target !== undefined) {
    if (!redirect && kind) bad('target', `only moved and merged tombstones have one, not ${kind}`);
    if (!isStorableKey(target)) bad('target', 'must be a key of 1 to 2048 bytes, without NUL characters');
    else if (!isTargetKey(target)) bad('target', DOT_TARGET_REASON);
    if (target === key) bad('target', 'must differ from key');
  }
  let prefix = false;
  const prefixFlag = record.prefix;
  if (prefixFlag !== undefined && prefixFlag !== null) {
    if (prefixFlag === true || prefixFlag === 'true') prefix = true;
    else if (prefixFlag !== false && prefixFlag !== 'false') bad('prefix', 'must be true or false');
  }
  if (prefix) {
    if (isStorableKey(key) && !isPrefixKey(key)) bad('key', PREFIX_KEY_REASON);
    if (kind === 'merged') bad('kind', 'a prefix tombstone is deleted, hidden or moved, never merged');
    if (target !== undefined && isStorableKey(target) && !isPrefixKey(target)) bad('target', `a moved prefix leads to a prefix: ${PREFIX_KEY_REASON}`);
  }
  let permanent = true;
  const flag = record.permanent;
  if (flag !== undefined && flag !== null) {
    if (flag === true || flag === 'true') permanent = true;
    else if (flag === false || flag === 'false') permanent = false;
    else bad('permanent', 'must be true or false');
  }
  if (reason !== undefined && (reason.length > LIMITS.reasonLength || reason.includes('\u0000') || !isWellFormed(reason))) {
    bad('reason', `must be at most ${LIMITS.reasonLength} characters, without NUL characters`);
  }
  if (alternative !== undefined) {
    if (kind !== 'deleted') bad('alternative', `only deleted tombstones offer one, not ${given}`);
    else if (!isSafeLink(alternative)) bad('alternative', 'must be a path or an absolute http(s) URL, in printable ASCII');
    else if (!alternative.startsWith('/')) {
      const host = new URL(alternative).host;
      if (!alternativeHosts.includes(host.toLowerCase())) bad('alternative', `the host ${host} is not in the module's alternativeHosts`);
    }
  }
  let expires: string | null = null;
  if (expiresAt !== undefined) {
    // The create endpoint's rule (class-validator's strict ISO 8601), then a real instant.
    const date = isISO8601(expiresAt, { strict: true }) ? new Date(expiresAt) : undefined;
    if (date && !Number.isNaN(date.getTime())) expires = timestampText(date);
    else bad('expiresAt', 'must be an ISO 8601 date-time');
  }
  if (!ok) return null;
  return {
    line,
    scope,
    type: type as string,
    key: key as string,
    kind: kind as TombstoneKind,
    target: target ?? null,
    permanent,
    reason: reason ?? null,
    alternative: alternative ?? null,
    expiresAt: expires,
    prefix,
  };
}

/** The group of a (scope, type), created on first use. */
export function groupOf(batch: Batch, scope: string, type: string): Group {
  const name = `${scope}\u0000${type}`;
  let group = batch.get(name);
  if (!group) batch.set(name, (group = { scope, type, keys: new Map() }));
  return group;
}

/**
 * Where each redirect of the batch ends, through the batch and the table's own redirects
 * (`hops`: the line of a row whose target redirects in the table → where that leads), so that
 * chains stay one hop. A redirect that comes back to a key already on its way, through any mix of
 * rows of the batch and of the table, is a cycle: a row error, reported in the order of the rows.
 */
export function collapse(batch: Batch, hops: Map<number, string>, fail: Fail): Map<ImportRow, string> {
  const changed = new Map<ImportRow, string>();
  const cycles: [ImportRow, string[]][] = [];
  for (const group of batch.values()) {
    const targets = new Map<string, string | null>();
    const tableHops = new Map<string, string>();
    for (const [key, row] of group.keys) {
      // A prefix's move is not collapsed (a key's own move is not its section's): the import
      // walks the written redirects once they are in (see TombstoneTransferService.import()).
      targets.set(key, row.prefix ? null : row.target);
      const hop = hops.get(row.line);
      if (hop !== undefined && row.target !== null) tableHops.set(row.target, hop);
    }
    const finals = collapseChains(
      targets,
      (key) => tableHops.get(key),
      (source, path) => cycles.push([group.keys.get(source) as ImportRow, path]),
    );
    for (const [source, final] of finals) {
      const row = group.keys.get(source) as ImportRow;
      if (final !== row.target) changed.set(row, final);
    }
  }
  for (const [row, path] of cycles.sort(([a], [b]) => a.line - b.line)) {
    fail(row.line, 'target', `would form a cycle: ${path.map((k) => `'${k.slice(0, 60)}'`).join(' → ')}`);
  }
  return changed;
}

/** Sends the rows to `tombstones_import` with COPY, in PostgreSQL's text format. */
export async function copyRows(tx: EntityManager, rows: ImportRow[]): Promise<void> {
  if (!tx.queryRunner) throw new Error('An import runs in a transaction of its own.');
  const client = (await tx.queryRunner.connect()) as PoolClient;
  const sink = client.query(
    copyFrom(
      `COPY tombstones_import (line, scope, resource_type, resource_key, kind, target_key, permanent, reason, alternative, expires_at, prefix)
       FROM STDIN (ENCODING 'UTF8')`,
    ),
  );
  function* text(): Generator<string> {
    for (let start = 0; start < rows.length; start += COPY_CHUNK) {
      let chunk = '';
      for (let i = start; i < rows.length && i < start + COPY_CHUNK; i++) {
        const r = rows[i];
        chunk += `${r.line}\t${copyText(r.scope)}\t${copyText(r.type)}\t${copyText(r.key)}\t${r.kind}\t${copyText(r.target)}\t${
          r.permanent ? 't' : 'f'
        }\t${copyText(r.reason)}\t${copyText(r.alternative)}\t${r.expiresAt ?? '\\N'}\t${r.prefix ? 't' : 'f'}\n`;
      }
      yield chunk;
    }
  }
  await pipeline(Readable.from(text()), sink);
}

const COPY_SPECIAL = /[\\\t\n\r]/;
const COPY_ESCAPES: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' };

/** A value in COPY's text format: `\N` for NULL; backslash, tab, newline and carriage return escaped. */
function copyText(value: string | null): string {
  if (value === null) return '\\N';
  // Testing first is several times faster than replacing, for values that need nothing (most).
  return COPY_SPECIAL.test(value) ? value.replace(/[\\\t\n\r]/g, (c) => COPY_ESCAPES[c]) : value;
}

/**
 * An instant as PostgreSQL reads it, in UTC: as toISOString(), except that a year past 9999 has
 * no sign and JavaScript's year 0 is 1 BC (both can come out of a date-time that passes the ISO
 * 8601 check, such as `0000` or `0099001`), as node-postgres writes a Date.
 */
function timestampText(date: Date): string {
  const iso = date.toISOString();
  const year = date.getUTCFullYear();
  if (year >= 1 && year <= 9999) return iso;
  const rest = iso.slice(iso.indexOf('-', 1)); // -MM-DDTHH:mm:ss.sssZ
  return year >= 1 ? `${year}${rest}` : `${String(1 - year).padStart(4, '0')}${rest} BC`;
}
