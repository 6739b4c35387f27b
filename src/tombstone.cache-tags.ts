import { createHash } from 'node:crypto';
import { Inject, Injectable, Logger, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { TOMBSTONE_OPTIONS } from './tombstone.constants.js';
import { preview } from './tombstone.exceptions.js';
import { type KeyNormalizer, lookupKey } from './tombstone.keys.js';
import type { ResolvedCacheTagsOptions, ResolvedTombstoneOptions } from './tombstone.options.js';
import type { TombstonedSettings, TombstoneRequest } from './tombstone.types.js';

/** Most bytes of one tag: Fastly's limit for a surrogate key (its purge API refuses longer ones). */
export const MAX_TAG_BYTES = 1024;

/**
 * Most bytes of the tags in one header, separators included: Fastly ignores the keys past 16,384
 * bytes of `Surrogate-Key`, and Cloudflare's `Cache-Tag` may not exceed 16 KB.
 */
export const MAX_TAGS_BYTES = 16_384;

/** A tag: printable ASCII without a space or a comma (so that no separator can split it). */
const VALID_TAG = /^[\x21-\x2b\x2d-\x7e]+$/;

/**
 * The cache tags of (resourceType, key) under `options` (the module's resolved options, token
 * `TOMBSTONE_OPTIONS`): those its answers carry, and those a purge must name when the key's
 * tombstone changes. Whoever purges calls this with the same options, so the header and the purge
 * always agree. None when `cacheTags` is off.
 *
 * The default tag is `${resourceType}/${encodeURIComponent(key)}`, or `${resourceType}/#` and the
 * first 32 hex digits of the key's SHA-256 when that would be longer than 1024 bytes (or the key
 * cannot be encoded). A `tag` function's tags are checked at every call: a tag that is not a
 * string of printable ASCII without a space or a comma, of at most 1024 bytes, or that would make
 * the header longer than 16,384 bytes, is left out and reported to `onInvalid`, as is a function
 * that throws. It never throws. Internal.
 */
export function cacheTagsOf(
  options: Pick<ResolvedTombstoneOptions, 'cacheTags'>,
  resourceType: string,
  key: string,
  onInvalid?: (problem: string) => void,
): string[] {
  const settings = options.cacheTags;
  if (!settings) return [];
  if (settings.tag === undefined) {
    const tag = defaultTag(resourceType, key);
    if (VALID_TAG.test(tag)) return [tag];
    onInvalid?.(`the resource type ${JSON.stringify(preview(resourceType))} cannot be part of a tag`);
    return [];
  }
  let given: unknown;
  try {
    given = settings.tag(resourceType, key);
  } catch (error) {
    onInvalid?.(`cacheTags.tag() threw: ${(error as Error)?.message ?? String(error)}`);
    return [];
  }
  if (typeof given === 'string') given = [given];
  if (!Array.isArray(given)) {
    onInvalid?.(`cacheTags.tag() returned ${describe(given)}, not a string or an array of strings`);
    return [];
  }
  return addTags([], given, settings.separator, onInvalid);
}

/**
 * The tags of `keys` of one type, in order and each once, within the header's 16,384 bytes. A
 * redirect's answer is tagged with its target's tags as well as its own.
 */
function tagsOfKeys(options: Pick<ResolvedTombstoneOptions, 'cacheTags'>, resourceType: string, keys: readonly string[], onInvalid: (problem: string) => void): string[] {
  const first = cacheTagsOf(options, resourceType, keys[0], onInvalid);
  if (keys.length === 1 || !options.cacheTags) return first;
  return addTags(first, keys.slice(1).flatMap((key) => cacheTagsOf(options, resourceType, key, onInvalid)), options.cacheTags.separator, onInvalid);
}

/** `tags` with the valid `more` that fit added, each once; `tags` are valid already. */
function addTags(tags: string[], more: readonly unknown[], separator: string, onInvalid?: (problem: string) => void): string[] {
  let bytes = tags.reduce((sum, tag, i) => sum + tag.length + (i === 0 ? 0 : separator.length), 0);
  for (const tag of more) {
    // Checked for its length first: a user's string may be megabytes long.
    if (typeof tag !== 'string' || tag.length > MAX_TAG_BYTES || !VALID_TAG.test(tag)) {
      onInvalid?.(`invalid tag ${describe(tag)}: a tag is printable ASCII without a space or a comma, of 1 to ${MAX_TAG_BYTES} bytes`);
      continue;
    }
    if (tags.includes(tag)) continue;
    const added = tag.length + (tags.length === 0 ? 0 : separator.length);
    if (bytes + added > MAX_TAGS_BYTES) {
      onInvalid?.(`tag ${describe(tag)} does not fit: the header would be longer than ${MAX_TAGS_BYTES} bytes`);
      continue;
    }
    tags.push(tag);
    bytes += added;
  }
  return tags;
}

function defaultTag(resourceType: string, key: string): string {
  let encoded: string | undefined;
  try {
    encoded = encodeURIComponent(key);
  } catch {
    encoded = undefined; // a lone surrogate
  }
  // encodeURIComponent() gives ASCII only: its length is its size in bytes.
  if (encoded !== undefined && resourceType.length + 1 + encoded.length <= MAX_TAG_BYTES) return `${resourceType}/${encoded}`;
  // `#` is never the first character of an encoded key (it would be `%23`): the two forms never meet.
  return `${resourceType}/#${createHash('sha256').update(key).digest('hex').slice(0, 32)}`;
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(preview(value, 60));
  if (value === null || value === undefined || typeof value !== 'object') return String(value);
  return Array.isArray(value) ? 'an array' : 'an object';
}

/** Where a `@Tombstoned()` route's found answers find the tags of their app (see `TombstoneCacheTags`). */
const CACHE_TAGS = Symbol('nestjs-tombstones:cache-tags');

/** Problems with tags are logged once per minute per resource type, at most. */
const LOG_INTERVAL_MS = 60_000;
/** Resource types whose last logged problem is remembered (types come from decorators: few). */
const MAX_LOGGED_TYPES = 1000;

/** An HTTP response of either adapter: Express's `res`, or Fastify's `reply`. */
interface AnyResponse {
  getHeader?(name: string): unknown;
  setHeader?(name: string, value: string): unknown;
  header?(name: string, value: string): unknown;
  headersSent?: boolean;
  sent?: boolean;
  /** Express: the app, and the request. */
  app?: Record<symbol, unknown>;
  req?: TombstoneRequest;
  /** Fastify: the server (or the plugin context it was registered in, whose prototype is the server's), and the request. */
  server?: Record<symbol, unknown>;
  request?: TombstoneRequest;
}

/**
 * Writes the cache tag header of one app: on the module's answers (through its response writer),
 * and on the found answers of `@Tombstoned({ cacheTags: true })` routes. Those have no access to
 * the app's providers: the instance puts itself on the app's HTTP server (Express's app,
 * Fastify's instance) at start-up, where their response leads, so that each app keeps its own.
 * Internal.
 */
@Injectable()
export class TombstoneCacheTags implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger('TombstoneModule');
  private readonly settings: ResolvedCacheTagsOptions | false;
  /** Per resource type: when a problem was last logged, and how many went unlogged since. */
  private readonly logged = new Map<string, { at: number; unlogged: number }>();
  private host?: Record<symbol, unknown>;

  constructor(
    @Inject(TOMBSTONE_OPTIONS) private readonly options: ResolvedTombstoneOptions,
    private readonly adapterHost: HttpAdapterHost,
  ) {
    this.settings = options.cacheTags;
  }

  /** Whether answers carry tags at all. */
  get enabled(): boolean {
    return this.settings !== false;
  }

  onModuleInit(): void {
    const host = this.adapterHost.httpAdapter?.getInstance?.() as unknown;
    if (!this.settings || (typeof host !== 'object' && typeof host !== 'function') || host === null) return;
    this.host = host as Record<symbol, unknown>;
    Object.defineProperty(host, CACHE_TAGS, { value: this, configurable: true, writable: true, enumerable: false });
  }

  onModuleDestroy(): void {
    if (this.host?.[CACHE_TAGS] === this) delete this.host[CACHE_TAGS];
  }

  /**
   * Sets the header on `response` with the tags of `keys` (a redirect: its key, then its
   * target), adding them to tags the app put there already. Nothing when tags are off, or when
   * every tag was left out.
   */
  write(response: unknown, resourceType: string, keys: readonly string[]): void {
    const settings = this.settings;
    if (!settings) return;
    // A type whose keys are normalised is tagged by their normal form, as its tombstones are
    // stored and purged: `OLD-HELLO`'s answer goes with the purge of `old-hello`'s tombstone.
    const normalize = this.options.normalizeKeys.size === 0 ? undefined : this.options.normalizeKeys.get(resourceType);
    const named = normalize === undefined ? keys : keys.map((key) => normalForm(normalize, key));
    const tags = tagsOfKeys(this.options, resourceType, named, (problem) => this.report(resourceType, keys[0], problem));
    if (tags.length === 0) return;
    const res = response as AnyResponse;
    const current = res.getHeader?.(settings.header);
    let value = tags.join(settings.separator);
    if (current !== undefined) {
      const present = (Array.isArray(current) ? current : [current]).flatMap((v) => String(v).split(/[ ,]+/)).filter((v) => v !== '');
      value = [...present, ...tags.filter((tag) => !present.includes(tag))].join(settings.separator);
    }
    if (typeof res.setHeader === 'function') res.setHeader(settings.header, value);
    else res.header?.(settings.header, value);
  }

  /** Logs a problem with the tags of a type, at most once per minute per type, with how many were not. */
  private report(resourceType: string, key: string, problem: string): void {
    const now = Date.now();
    const last = this.logged.get(resourceType);
    if (last !== undefined && now - last.at < LOG_INTERVAL_MS) {
      last.unlogged++;
      return;
    }
    if (last === undefined && this.logged.size >= MAX_LOGGED_TYPES) this.logged.clear();
    const more = last?.unlogged ? ` (and ${last.unlogged} more problems with ${resourceType} tags not logged since the last one)` : '';
    this.logged.set(resourceType, { at: now, unlogged: 0 });
    this.logger.warn(
      `Cache tags of ${preview(resourceType)} "${preview(key)}": ${problem}; left out of the ${(this.settings as ResolvedCacheTagsOptions).header} header.${more}`,
    );
  }
}

/** A key's normal form for its tags; the key as it is when the normaliser fails (the answer is a plain 404 then). */
function normalForm(normalize: KeyNormalizer, key: string): string {
  try {
    return lookupKey(normalize, key);
  } catch {
    return key;
  }
}

/**
 * Tags a found resource's answer on a `@Tombstoned({ cacheTags: true })` route: the header of
 * its key, when the app's TombstoneModule has `cacheTags` on. Never throws: a found resource is
 * answered whatever happens here.
 */
export function tagFound(settings: TombstonedSettings, response: unknown): void {
  try {
    const res = response as AnyResponse;
    const tags = (res.app ?? res.server)?.[CACHE_TAGS] as TombstoneCacheTags | undefined;
    if (tags === undefined || res.headersSent === true) return;
    const request = res.req ?? res.request;
    if (request === undefined) return;
    const key = settings.key ? settings.key(request) : request.params?.[settings.param];
    if (typeof key === 'string') tags.write(response, settings.type, [key]);
  } catch {
    // A key function that throws, a response that refuses the header: the answer goes out without it.
  }
}
