import { createHash } from 'node:crypto';
import { Injectable } from '@nestjs/common';
import { type TombstoneAnswer } from './tombstone.types.js';
import { isSafeLink } from './tombstone.validation.js';

export type TombstoneFormat = 'json' | 'problem';

export interface RenderedAnswer {
  readonly contentType: string;
  readonly body: Record<string, unknown>;
}

/** An HTML answer: the page, and the headers that go with it (its `Content-Security-Policy`). */
export interface RenderedPage {
  readonly contentType: string;
  readonly body: string;
  readonly headers: Readonly<Record<string, string>>;
}

/**
 * The words of an HTML answer, in the page's language (`lang`): override `htmlTexts()` to
 * translate them. `heading` is the answer's `message()`.
 */
interface TombstoneHtmlTexts {
  readonly lang: string;
  /** The status line, also the page's title: `410 Gone`. */
  readonly status: string;
  readonly heading: string;
  readonly deleted: string;
  readonly reason: string;
  readonly alternative: string;
  readonly location: string;
  readonly suggestions: string;
  readonly requestId: string;
}

/** The default base of the problem type URIs: a tag URI (RFC 4151), never dereferenced. */
export const DEFAULT_PROBLEM_TYPE_BASE = 'tag:nestjs-tombstones,2026:';

/**
 * One problem type per kind of answer (RFC 9457 §3.1.1): the name appended to the base, and the
 * title, which summarises the type and so is the same for every status the type answers with.
 */
const PROBLEM_TYPES: Record<TombstoneAnswer['error'], { name: string; title: string }> = {
  not_found: { name: 'not-found', title: 'Not Found' },
  gone: { name: 'gone', title: 'Gone' },
  moved: { name: 'moved', title: 'Moved' },
};

const STATUS_TEXTS: Record<TombstoneAnswer['status'], string> = {
  301: 'Moved Permanently',
  302: 'Found',
  307: 'Temporary Redirect',
  308: 'Permanent Redirect',
  404: 'Not Found',
  410: 'Gone',
};

/**
 * The page's only style, allowed by its hash: the page needs no `'unsafe-inline'`, and runs no
 * script and loads nothing else.
 */
const STYLE =
  ':root{color-scheme:light dark;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.5}' +
  'body{margin:0;padding:3rem 1.25rem}' +
  'main{max-width:40rem;margin:0 auto}' +
  '.status{margin:0;font-size:.875rem;font-weight:600;letter-spacing:.06em;text-transform:uppercase;opacity:.7}' +
  'h1{margin:.25rem 0 1.5rem;font-size:1.625rem;line-height:1.25;overflow-wrap:anywhere}' +
  'h2{margin:1.5rem 0 .5rem;font-size:1.125rem}' +
  'dl{display:grid;grid-template-columns:max-content 1fr;gap:.5rem 1.25rem;margin:0}' +
  'dt{font-weight:600}' +
  'dd{margin:0;overflow-wrap:anywhere}' +
  'ul{margin:0;padding-left:1.25rem}' +
  'a{color:LinkText}' +
  '.request{margin-top:2.5rem;font-size:.8125rem;opacity:.7;overflow-wrap:anywhere}';

/**
 * Turns an answer into a body: JSON, problem details, or, for a browser, a small HTML page.
 * Subclass it and pass the class as the module's `renderer` option to change wording or shape;
 * the status and headers stay the module's.
 *
 * @example
 * class MyRenderer extends TombstoneRenderer {
 *   protected override message(answer: TombstoneAnswer) {
 *     return answer.error === 'gone' ? 'This page was retired.' : super.message(answer);
 *   }
 *
 *   // The HTML page in German; `page()` and `htmlStyle()` change the page itself.
 *   protected override htmlTexts(answer: TombstoneAnswer) {
 *     return { ...super.htmlTexts(answer), lang: 'de', deleted: 'Gelöscht', reason: 'Grund', alternative: 'Stattdessen' };
 *   }
 * }
 */
@Injectable()
export class TombstoneRenderer {
  /** Set by the module from its `problemTypeBase` option. @internal */
  problemTypeBase = DEFAULT_PROBLEM_TYPE_BASE;

  render(answer: TombstoneAnswer, format: TombstoneFormat): RenderedAnswer {
    const facts = this.facts(answer);
    if (format === 'json') {
      return {
        contentType: 'application/json; charset=utf-8',
        body: { error: answer.error, message: this.message(answer), ...facts },
      };
    }
    // RFC 9457: the members beyond the five standard ones are extensions of the answer's type.
    return {
      contentType: 'application/problem+json; charset=utf-8',
      body: {
        type: this.problemType(answer),
        title: PROBLEM_TYPES[answer.error].title,
        status: answer.status,
        detail: this.message(answer),
        instance: answer.path,
        error: answer.error,
        ...facts,
      },
    };
  }

  /**
   * The problem type URI of an answer: the module's `problemTypeBase` followed by `not-found`,
   * `gone` or `moved`. Override it to give your own types.
   */
  protected problemType(answer: TombstoneAnswer): string {
    return this.problemTypeBase + PROBLEM_TYPES[answer.error].name;
  }

  protected message(answer: TombstoneAnswer): string {
    const subject = `${answer.label} '${shorten(answer.id)}'`;
    switch (answer.error) {
      case 'gone':
        return `${subject} was permanently deleted`;
      case 'moved':
        return `${subject} has moved to ${answer.location}`;
      default:
        return `${subject} was not found`;
    }
  }

  /** The machine-readable members, in a stable order. Hidden keys get exactly a 404's. */
  protected facts(answer: TombstoneAnswer): Record<string, unknown> {
    const facts: Record<string, unknown> = { resource: answer.resource, id: answer.id };
    if (answer.error === 'gone') {
      facts.deletedAt = answer.deletedAt;
      facts.reason = answer.reason ?? null;
      facts.alternative = answer.alternative ?? null;
    } else if (answer.error === 'moved') {
      facts.location = answer.location;
      facts.movedTo = answer.targetId;
    } else if (answer.suggestions !== undefined && answer.suggestions.length > 0) {
      facts.suggestions = answer.suggestions.map(({ id, location }) => ({ id, location }));
    }
    facts.path = answer.path;
    facts.requestId = answer.requestId;
    return facts;
  }

  /**
   * The answer for a browser (a request that prefers `text/html`, when the module's `html` option
   * is on): the page of `page()`, with a `Content-Security-Policy` that lets it run no script and
   * load nothing.
   */
  renderHtml(answer: TombstoneAnswer): RenderedPage {
    return {
      contentType: 'text/html; charset=utf-8',
      body: this.page(answer),
      headers: { 'Content-Security-Policy': this.contentSecurityPolicy() },
    };
  }

  /**
   * The HTML page of an answer: the status, what happened and when, the reason, a link to the
   * alternative (or, for a redirect, to where the resource lives now; for a 404, to the
   * suggestions). Every value is escaped, and a link is only made of a same-origin path or an
   * http(s) URL. Override it for a page of your own: escape what you write with `escape()`, keep
   * to `href()` for links, and put your CSS in `htmlStyle()`, the only style the page's
   * `Content-Security-Policy` allows.
   */
  protected page(answer: TombstoneAnswer): string {
    const texts = this.htmlTexts(answer);
    const e = escapeHtml;
    const facts: string[] = [];
    if (answer.error === 'gone') {
      if (answer.deletedAt) {
        facts.push(`<dt>${e(texts.deleted)}</dt><dd><time datetime="${e(answer.deletedAt)}">${e(this.formatDate(answer.deletedAt, texts.lang))}</time></dd>`);
      }
      if (answer.reason) facts.push(`<dt>${e(texts.reason)}</dt><dd>${e(answer.reason)}</dd>`);
      if (answer.alternative) facts.push(`<dt>${e(texts.alternative)}</dt><dd>${this.link(answer.alternative, answer.alternative)}</dd>`);
    } else if (answer.error === 'moved' && answer.location) {
      facts.push(`<dt>${e(texts.location)}</dt><dd>${this.link(answer.location, answer.location)}</dd>`);
    }
    let suggestions = '';
    if (answer.error === 'not_found' && answer.suggestions?.length) {
      const items = answer.suggestions.map((s) => `<li>${this.link(s.location, s.id)}</li>`).join('');
      suggestions = `<h2 id="suggestions">${e(texts.suggestions)}</h2><ul aria-labelledby="suggestions">${items}</ul>`;
    }
    return (
      `<!doctype html><html lang="${e(texts.lang)}"><head><meta charset="utf-8">` +
      '<meta name="viewport" content="width=device-width,initial-scale=1">' +
      `<title>${e(texts.status)}</title><style>${this.htmlStyle()}</style></head>` +
      `<body><main><p class="status">${e(texts.status)}</p><h1>${e(texts.heading)}</h1>` +
      (facts.length ? `<dl>${facts.join('')}</dl>` : '') +
      suggestions +
      `<p class="request">${e(texts.requestId)}: <code>${e(answer.requestId)}</code></p></main></body></html>\n`
    );
  }

  /** The words of the HTML page, and its language: override it to translate them. */
  protected htmlTexts(answer: TombstoneAnswer): TombstoneHtmlTexts {
    return {
      lang: 'en',
      status: `${answer.status} ${STATUS_TEXTS[answer.status]}`,
      heading: this.message(answer),
      deleted: 'Deleted',
      reason: 'Reason',
      alternative: 'See instead',
      location: 'Now at',
      suggestions: 'Did you mean',
      requestId: 'Request id',
    };
  }

  /**
   * The CSS of the HTML page. The page's `Content-Security-Policy` allows this style by its hash
   * and nothing else: no script, no external style, image or font.
   */
  protected htmlStyle(): string {
    return STYLE;
  }

  /** A deletion's time (an ISO 8601 string) as the page shows it, in the page's language, in UTC. */
  protected formatDate(iso: string, lang: string): string {
    let format = this.dateFormats.get(lang);
    if (!format) {
      try {
        format = new Intl.DateTimeFormat(lang, { dateStyle: 'long', timeStyle: 'short', timeZone: 'UTC' });
      } catch {
        format = new Intl.DateTimeFormat('en', { dateStyle: 'long', timeStyle: 'short', timeZone: 'UTC' });
      }
      this.dateFormats.set(lang, format);
    }
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : `${format.format(date)} UTC`;
  }

  private readonly dateFormats = new Map<string, Intl.DateTimeFormat>();

  /** `value` for HTML text and quoted attributes (see `escapeHtml()`). */
  protected escape(value: string): string {
    return escapeHtml(value);
  }

  /**
   * The URL when a page may link to it: a same-origin path or an absolute http(s) URL (never
   * `javascript:`, `data:` or a protocol-relative `//host`); `null` otherwise.
   */
  protected href(url: string): string | null {
    return isSafeLink(url) ? url : null;
  }

  /** A link to `url` named `text`, or the text alone when `url` is no link to follow. */
  private link(url: string, text: string): string {
    const href = this.href(url);
    return href === null ? escapeHtml(text) : `<a href="${escapeHtml(href)}">${escapeHtml(text)}</a>`;
  }

  /** The policy of the HTML page: its one style, by hash, and nothing else. */
  protected contentSecurityPolicy(): string {
    const style = this.htmlStyle();
    if (this.policy?.style !== style) {
      const hash = createHash('sha256').update(style, 'utf8').digest('base64');
      this.policy = {
        style,
        header: `default-src 'none'; style-src 'sha256-${hash}'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
      };
    }
    return this.policy.header;
  }

  private policy?: { style: string; header: string };
}

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/**
 * `value` for HTML text and quoted attributes: `&`, `<`, `>`, `"` and `'` escaped, and the
 * characters that reorder text on screen (bidirectional embeddings, overrides and isolates,
 * U+202A to U+202E and U+2066 to U+2069) shown as U+FFFD: a key is whatever a link's author typed,
 * and `/articles/%E2%80%AEgnp.exe` must not read as something else on the site's own page.
 */
export function escapeHtml(value: string): string {
  // Most values (keys, labels, request ids) have nothing to escape.
  return HAS_ESCAPE.test(value) ? value.replace(ESCAPED, (c) => HTML_ESCAPES[c] ?? '\uFFFD') : value;
}

const HAS_ESCAPE = /[&<>"'\u202A-\u202E\u2066-\u2069]/;
const ESCAPED = /[&<>"'\u202A-\u202E\u2066-\u2069]/g;

/** Keys up to this long are quoted whole in messages; longer ones are cut there. */
export const UNSHORTENED_ID_LENGTH = 200;

function shorten(id: string): string {
  return id.length <= UNSHORTENED_ID_LENGTH ? id : `${id.slice(0, UNSHORTENED_ID_LENGTH)}…`;
}
