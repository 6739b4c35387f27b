// docs/options.md is checked against the option classes, where the defaults are written (their
// field initialisers): every option has its row, with its default, and no row names an option
// that does not exist.
//
// The format this expects of docs/options.md:
// - a `## TombstoneModule` section and a `## TombstoneAdminModule` section (each up to the next
//   `## ` heading), for the options of each module;
// - in its module's section, per option, a table row whose first cell is the option's dotted
//   name in backticks (`cache.filter.minCapacity`), or a heading that holds it, e.g.
//   | `cache.maxEntries` | `10000` | Most answers the default store keeps. |
// - when the option's default is a string, number, boolean or list, the row's second cell (the
//   heading itself) holds it in backticks, written as in TypeScript: `'negotiate'`, `10000`,
//   `true`, `[]`; a boolean may be written "on" or "off" instead. An option whose default is none
//   (`dataSource`, `guard`...) or an object of its own options (`cacheControl`) may describe it
//   in words.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { TombstoneAdminOptions } from '../src/admin/admin.options.js';
import {
  TombstoneCacheControl,
  TombstoneCacheTagsOptions,
  TombstoneCircuitBreakerOptions,
  TombstoneFilterOptions,
  TombstoneHitCountOptions,
  TombstoneLookupCacheOptions,
  TombstoneMissLogOptions,
  TombstoneModuleOptions,
  TombstoneSuggestionOptions,
} from '../src/tombstone.options.js';
import { resolveTombstoneOptions } from '../src/tombstone.options-resolve.js';

const DOCS = fileURLToPath(new URL('../docs/options.md', import.meta.url));

/** Each options class, by the dotted name of the option that takes it ('' for the module's own). */
const MODULE_CLASSES = {
  '': TombstoneModuleOptions,
  cacheControl: TombstoneCacheControl,
  circuitBreaker: TombstoneCircuitBreakerOptions,
  hitCounts: TombstoneHitCountOptions,
  missLog: TombstoneMissLogOptions,
  cache: TombstoneLookupCacheOptions,
  'cache.filter': TombstoneFilterOptions,
  cacheTags: TombstoneCacheTagsOptions,
  suggestions: TombstoneSuggestionOptions,
} satisfies Record<string, new () => object>;

/** Options that ConfigurableModuleBuilder adds (`setExtras`), documented with the others. */
const MODULE_EXTRAS = ['isGlobal'];

interface Option {
  name: string;
  default: unknown;
}

/** Every option of the classes, by dotted name, with its default. */
function optionsOf(classes: Record<string, new () => object>): Option[] {
  return Object.entries(classes).flatMap(([prefix, Class]) =>
    Object.entries(new Class()).map(([name, value]) => ({ name: prefix ? `${prefix}.${name}` : name, default: value as unknown })),
  );
}

/** The lines of the `## <title>` section of the docs. */
function section(docs: string, title: string): string[] {
  const lines = docs.split('\n');
  const start = lines.findIndex((line) => line.trim() === `## ${title}`);
  if (start < 0) throw new Error(`docs/options.md has no "## ${title}" section.`);
  const end = lines.findIndex((line, i) => i > start && line.startsWith('## '));
  return lines.slice(start + 1, end < 0 ? undefined : end);
}

/** The option rows of a section: each row's name (its first cell, or a heading's) and where its default must be. */
function rowsOf(lines: string[]): Map<string, string> {
  const rows = new Map<string, string>();
  for (const line of lines) {
    if (line.startsWith('|')) {
      const [name, defaultCell = ''] = line.split(/(?<!\\)\|/).slice(1).map((cell) => cell.trim());
      const match = /^`([A-Za-z][\w.]*)`$/.exec(name);
      if (match) rows.set(match[1], defaultCell);
    } else if (/^#{1,6} /.test(line)) {
      for (const [, name] of line.matchAll(/`([A-Za-z][\w.]*)`/g)) rows.set(name, line);
    }
  }
  return rows;
}

/** How a default may be written; undefined when it need not be written (none, or an object of options). */
function spellings(value: unknown): string[] | undefined {
  switch (typeof value) {
    case 'string':
      return [`\`'${value}'\``];
    case 'number':
      return [`\`${value}\``];
    case 'boolean':
      return [`\`${value}\``, value ? 'on' : 'off'];
    default:
      return Array.isArray(value) ? [`\`${JSON.stringify(value)}\``] : undefined;
  }
}

function written(cell: string, spelling: string): boolean {
  return /^\w+$/.test(spelling) ? new RegExp(`\\b${spelling}\\b`).test(cell) : cell.includes(spelling);
}

describe('docs/options.md', () => {
  const docs = existsSync(DOCS) ? readFileSync(DOCS, 'utf8') : undefined;

  it('exists', () => {
    expect(docs).toBeDefined();
  });

  // An option whose settings are an object of their own must have its class above, or its
  // settings would go unchecked. Those that are off by default are resolved on to see them.
  it('knows every options class of the module', () => {
    const groups: string[] = [];
    const walk = (settings: object, prefix: string): void => {
      for (const [name, value] of Object.entries(settings)) {
        // A Map is one value per name of the app's (normalizeKeys: per resource type), not settings.
        if (typeof value !== 'object' || value === null || Array.isArray(value) || value instanceof Map) continue;
        groups.push(`${prefix}${name}`);
        walk(value, `${prefix}${name}.`);
      }
    };
    const defaults = resolveTombstoneOptions({});
    walk(defaults, '');
    for (const [name, value] of Object.entries(defaults)) {
      if (value === false) walk({ [name]: resolveTombstoneOptions({ [name]: true })[name as keyof typeof defaults] }, '');
    }
    expect(groups.sort()).toEqual(Object.keys(MODULE_CLASSES).filter(Boolean).sort());
  });

  describe.each([
    ['TombstoneModule', optionsOf(MODULE_CLASSES), MODULE_EXTRAS],
    ['TombstoneAdminModule', optionsOf({ '': TombstoneAdminOptions }), []],
  ])('%s', (title, options, extras) => {
    const rows = () => rowsOf(section(docs ?? '', title));

    it.each(options.map((option) => [option.name, option]))('documents `%s` with its default', (name, option) => {
      const row = rows().get(name);
      if (row === undefined) throw new Error(`docs/options.md, "## ${title}": no row or heading for \`${name}\`.`);
      const ways = spellings((option as Option).default);
      if (ways && !ways.some((way) => written(row, way))) {
        throw new Error(`docs/options.md, "## ${title}", \`${name}\`: the default should read ${ways.join(' or ')}, not "${row}".`);
      }
    });

    it('names no option that does not exist', () => {
      const known = new Set([...options.map((option) => option.name), ...extras]);
      expect([...rows().keys()].filter((name) => !known.has(name))).toEqual([]);
    });
  });
});
