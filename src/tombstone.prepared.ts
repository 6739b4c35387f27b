import { randomBytes } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { answerFor, notFoundAnswer, requestPath } from './tombstone.answer.js';
import { TombstoneCacheTags } from './tombstone.cache-tags.js';
import { TombstoneRenderer, UNSHORTENED_ID_LENGTH } from './tombstone.renderer.js';
import { type TombstoneAnswer, type TombstonedSettings, type TombstoneRequest, type TombstoneResolution } from './tombstone.types.js';

/**
 * An answer worked out once and kept, for the misses that get it again: the answer's facts, and
 * (once the writer has made them) its bytes: status, headers in the order they are set, and the
 * body as text around slots for what changes from one request to the next.
 *
 * Two kinds:
 * - a key's own answer (a 410 or a redirect), kept per route and request line, and used only
 *   while the lookup gives the very resolution it was made from (`resolution`): a change of the
 *   tombstone gives the key a new resolution object, and the kept answer is not used again;
 * - the 404 of a route (one per route, scoped or not), for any key without a tombstone or with a
 *   hidden one: its key, path and request id are slots (`resolution` is `null`).
 */
export interface PreparedAnswer {
  readonly resolution: TombstoneResolution | null;
  /** The answer, its request id (and for a route's 404, its key and path) the sentinels'. */
  readonly answer: TombstoneAnswer;
  /** Made by the writer at the first use; `null`: this answer cannot be prepared (written the long way). */
  bytes: PreparedBytes | null | undefined;
}

/** Slots in prepared bytes: what each request fills in. */
export const SLOT_REQUEST_ID = 0;
export const SLOT_KEY = 1;
export const SLOT_PATH = 2;
type Slot = typeof SLOT_REQUEST_ID | typeof SLOT_KEY | typeof SLOT_PATH;

export interface PreparedBytes {
  readonly status: number;
  /**
   * Names as the writer sets them, in its order; a value is the request id's slot or text. A list
   * header (`Vary`, `Link`) has its members too: the app may have set it already, and it is added to.
   */
  readonly headers: readonly (readonly [name: string, value: string | typeof SLOT_REQUEST_ID, list?: readonly string[]])[];
  /** The body's text and slots (the key and path slots are filled JSON-escaped). */
  readonly body: readonly (string | Slot)[];
}

/** One miss answered with a prepared answer: what the writer fills its slots with. */
export class PreparedReply {
  constructor(
    readonly prepared: PreparedAnswer,
    readonly requestId: string,
    /** The key asked for, and the request's path (the slots of a route's 404). */
    readonly key: string,
    readonly path: string,
  ) {}

  /** The same answer as facts, for the writer's long way (an HTML page, a header the app set). */
  answer(): TombstoneAnswer {
    const { answer } = this.prepared;
    return this.prepared.resolution === null
      ? notFoundAnswer(answer.resource, answer.label, this.key, this.path, this.requestId, answer.scoped)
      : { ...answer, requestId: this.requestId };
  }
}

/** Request lines longer than this are answered the long way, and not kept. */
const MAX_KEPT_URL = 512;
/** Keys' own answers kept, at most (the oldest go first): a few MB at most. */
const MAX_KEPT = 2000;

/**
 * The answers the module keeps ready (see `PreparedAnswer`): what makes a warm miss cost about what
 * a hand-written handler that already knows the answer costs. Only for answers that are the same
 * bytes for every such request: the default renderer's (a renderer of your own may make its body
 * from anything, so its answers are made for each request), JSON or problem details (not the
 * HTML page), and no cache tags (they name each request's key).
 */
@Injectable()
export class TombstonePreparedAnswers {
  /** Whether answers are kept at all (see the class). */
  readonly enabled: boolean;
  /**
   * What the kept answers hold in place of the request id, the key and the path: random, so that
   * no key, reason or URL a client sends can spell them.
   */
  readonly sentinels: { readonly requestId: string; readonly key: string; readonly path: string };
  private readonly kept = new Map<string, PreparedAnswer>();
  /** A route's 404, unscoped and scoped. */
  private readonly notFounds = new WeakMap<TombstonedSettings, [PreparedAnswer | undefined, PreparedAnswer | undefined]>();
  /** A number per route, for the keys of `kept`. */
  private readonly routes = new WeakMap<TombstonedSettings, number>();

  constructor(@Inject(TombstoneRenderer) renderer: TombstoneRenderer, cacheTags: TombstoneCacheTags) {
    this.enabled = !cacheTags.enabled && rendersAsDefault(renderer);
    const sentinel = (name: string) => `${name}${randomBytes(16).toString('hex')}`;
    this.sentinels = { requestId: sentinel('R'), key: sentinel('K'), path: sentinel('P') };
  }

  /**
   * Whether a request's answer can be a prepared one: it asks for JSON (or anything) in one of
   * the usual ways, and so gets the module's JSON or problem details without negotiation.
   */
  accepts(request: TombstoneRequest): boolean {
    const accept = request.headers.accept;
    return accept === undefined || accept === '*/*' || accept === 'application/json';
  }

  /**
   * The reply to a miss whose lookup gave `resolution` from memory, or `undefined` when it must
   * be answered the long way (a key too long for the 404's message to hold whole, a request line
   * too long to keep).
   */
  reply(settings: TombstonedSettings, request: TombstoneRequest, key: string, scoped: boolean, resolution: TombstoneResolution, requestId: string): PreparedReply | undefined {
    if (resolution.state === 'none' || resolution.state === 'hidden') {
      if (key.length > UNSHORTENED_ID_LENGTH) return undefined;
      return new PreparedReply(this.notFound(settings, scoped), requestId, key, requestPath(request));
    }
    const url = request.originalUrl ?? request.url;
    if (url.length > MAX_KEPT_URL) return undefined;
    const id = `${this.routeOf(settings)} ${request.method} ${scoped ? 's' : 'u'} ${key}\u0000${url}`;
    let prepared = this.kept.get(id);
    if (prepared === undefined || prepared.resolution !== resolution) {
      const answer = answerFor(resolution, {
        resource: settings.type,
        label: settings.label,
        id: key,
        request,
        requestId: this.sentinels.requestId,
        scoped,
        param: settings.key ? undefined : settings.param,
      });
      prepared = { resolution, answer, bytes: undefined };
      if (this.kept.size >= MAX_KEPT && !this.kept.has(id)) this.kept.delete(this.kept.keys().next().value as string);
      this.kept.set(id, prepared);
    }
    return new PreparedReply(prepared, requestId, key, '');
  }

  private notFound(settings: TombstonedSettings, scoped: boolean): PreparedAnswer {
    let both = this.notFounds.get(settings);
    if (both === undefined) this.notFounds.set(settings, (both = [undefined, undefined]));
    const at = scoped ? 1 : 0;
    const { requestId, key, path } = this.sentinels;
    return (both[at] ??= { resolution: null, answer: notFoundAnswer(settings.type, settings.label, key, path, requestId, scoped), bytes: undefined });
  }

  private routeOf(settings: TombstonedSettings): number {
    let route = this.routes.get(settings);
    if (route === undefined) this.routes.set(settings, (route = ++routeCount));
    return route;
  }
}

let routeCount = 0;

/**
 * Whether a renderer's JSON and problem details are the default renderer's: a function of the
 * answer's facts alone, which hold the request id as it is (so it can be a slot). A subclass that
 * overrides any method these bodies come from may make them from anything (the time, a
 * request-scoped language).
 */
function rendersAsDefault(renderer: TombstoneRenderer): boolean {
  const base = TombstoneRenderer.prototype as unknown as Record<string, unknown>;
  const own = renderer as unknown as Record<string, unknown>;
  return ['render', 'facts', 'message', 'problemType'].every((method) => own[method] === base[method]);
}

/** Splits `text` at the sentinels: text and slots. */
export function slotsOf(text: string, sentinels: TombstonePreparedAnswers['sentinels']): (string | Slot)[] {
  const parts: (string | Slot)[] = [];
  const found = new RegExp(`${sentinels.requestId}|${sentinels.key}|${sentinels.path}`, 'g');
  let last = 0;
  for (const match of text.matchAll(found)) {
    if (match.index > last) parts.push(text.slice(last, match.index));
    parts.push(match[0] === sentinels.requestId ? SLOT_REQUEST_ID : match[0] === sentinels.key ? SLOT_KEY : SLOT_PATH);
    last = match.index + match[0].length;
  }
  if (last < text.length) parts.push(text.slice(last));
  return parts;
}

/** A string as it reads inside a JSON string (without its quotes), as JSON.stringify writes it. */
export function jsonText(value: string): string {
  return NEEDS_ESCAPE.test(value) ? JSON.stringify(value).slice(1, -1) : value;
}

// What JSON.stringify escapes: quotes, backslashes, control characters, and (alone) surrogates.
// eslint-disable-next-line no-control-regex
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;
