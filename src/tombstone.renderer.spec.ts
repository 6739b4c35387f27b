import { createHash } from 'node:crypto';
import { escapeHtml, TombstoneRenderer } from './tombstone.renderer.js';
import { type TombstoneAnswer } from './tombstone.types.js';

const JSON_TYPE = 'application/json; charset=utf-8';
const PROBLEM_TYPE = 'application/problem+json; charset=utf-8';

const notFound: TombstoneAnswer = {
  status: 404,
  error: 'not_found',
  resource: 'article',
  label: 'Article',
  id: 'hello-world',
  path: '/articles/hello-world',
  requestId: 'req-1',
  scoped: false,
};

const gone: TombstoneAnswer = {
  ...notFound,
  status: 410,
  error: 'gone',
  deletedAt: '2024-05-01T12:00:00.000Z',
  reason: 'Retired',
  alternative: '/articles/current',
};

const moved: TombstoneAnswer = {
  ...notFound,
  status: 301,
  error: 'moved',
  location: '/articles/hello-there?ref=x',
  targetId: 'hello-there',
};

describe('TombstoneRenderer', () => {
  const renderer = new TombstoneRenderer();

  describe('JSON bodies', () => {
    it('not_found', () => {
      const rendered = renderer.render(notFound, 'json');
      expect(rendered.contentType).toBe(JSON_TYPE);
      expect(rendered.body).toStrictEqual({
        error: 'not_found',
        message: "Article 'hello-world' was not found",
        resource: 'article',
        id: 'hello-world',
        path: '/articles/hello-world',
        requestId: 'req-1',
      });
    });

    it('gone', () => {
      const rendered = renderer.render(gone, 'json');
      expect(rendered.contentType).toBe(JSON_TYPE);
      expect(rendered.body).toStrictEqual({
        error: 'gone',
        message: "Article 'hello-world' was permanently deleted",
        resource: 'article',
        id: 'hello-world',
        deletedAt: '2024-05-01T12:00:00.000Z',
        reason: 'Retired',
        alternative: '/articles/current',
        path: '/articles/hello-world',
        requestId: 'req-1',
      });
    });

    it('gone without reason or alternative has them as null, not missing', () => {
      const { reason: _r, alternative: _a, ...bare } = gone;
      const body = renderer.render(bare, 'json').body;
      expect(body.reason).toBeNull();
      expect(body.alternative).toBeNull();
      expect(Object.keys(body)).toContain('reason');
      expect(Object.keys(body)).toContain('alternative');
    });

    it('moved', () => {
      const rendered = renderer.render(moved, 'json');
      expect(rendered.contentType).toBe(JSON_TYPE);
      expect(rendered.body).toStrictEqual({
        error: 'moved',
        message: "Article 'hello-world' has moved to /articles/hello-there?ref=x",
        resource: 'article',
        id: 'hello-world',
        location: '/articles/hello-there?ref=x',
        movedTo: 'hello-there',
        path: '/articles/hello-world',
        requestId: 'req-1',
      });
    });

    it('keeps the members in a stable order', () => {
      expect(Object.keys(renderer.render(gone, 'json').body)).toEqual([
        'error',
        'message',
        'resource',
        'id',
        'deletedAt',
        'reason',
        'alternative',
        'path',
        'requestId',
      ]);
      expect(Object.keys(renderer.render(moved, 'json').body)).toEqual([
        'error',
        'message',
        'resource',
        'id',
        'location',
        'movedTo',
        'path',
        'requestId',
      ]);
    });

    it('never leaks the scoped flag or the label', () => {
      const body = renderer.render({ ...gone, scoped: true }, 'json').body;
      expect(body).not.toHaveProperty('scoped');
      expect(body).not.toHaveProperty('label');
      expect(body).not.toHaveProperty('status');
    });
  });

  describe('problem details (RFC 9457)', () => {
    it.each([301, 302, 307, 308] as const)('redirect %i: the moved type, whose title is the same for every status', (status) => {
      const body = renderer.render({ ...moved, status }, 'problem').body;
      expect(body.type).toBe('tag:nestjs-tombstones,2026:moved');
      expect(body.title).toBe('Moved');
      expect(body.status).toBe(status);
    });

    it('never about:blank: every answer has extension members, so every answer has a type of its own', () => {
      const types = [notFound, gone, moved].map((answer) => renderer.render(answer, 'problem').body.type);
      expect(types).toEqual(['tag:nestjs-tombstones,2026:not-found', 'tag:nestjs-tombstones,2026:gone', 'tag:nestjs-tombstones,2026:moved']);
    });

    it('types follow the base the module sets, and a subclass can give its own', () => {
      const based = new TombstoneRenderer();
      based.problemTypeBase = 'https://api.example.com/problems/';
      expect(based.render(gone, 'problem').body.type).toBe('https://api.example.com/problems/gone');
      class Own extends TombstoneRenderer {
        protected override problemType(answer: TombstoneAnswer): string {
          return `https://example.com/errors#${answer.error}`;
        }
      }
      expect(new Own().render(notFound, 'problem').body.type).toBe('https://example.com/errors#not_found');
    });

    it('not_found: its type and title, detail, instance and the facts as extensions', () => {
      const rendered = renderer.render(notFound, 'problem');
      expect(rendered.contentType).toBe(PROBLEM_TYPE);
      expect(rendered.body).toStrictEqual({
        type: 'tag:nestjs-tombstones,2026:not-found',
        title: 'Not Found',
        status: 404,
        detail: "Article 'hello-world' was not found",
        instance: '/articles/hello-world',
        error: 'not_found',
        resource: 'article',
        id: 'hello-world',
        path: '/articles/hello-world',
        requestId: 'req-1',
      });
    });

    it('gone', () => {
      const rendered = renderer.render(gone, 'problem');
      expect(rendered.contentType).toBe(PROBLEM_TYPE);
      expect(rendered.body).toStrictEqual({
        type: 'tag:nestjs-tombstones,2026:gone',
        title: 'Gone',
        status: 410,
        detail: "Article 'hello-world' was permanently deleted",
        instance: '/articles/hello-world',
        error: 'gone',
        resource: 'article',
        id: 'hello-world',
        deletedAt: '2024-05-01T12:00:00.000Z',
        reason: 'Retired',
        alternative: '/articles/current',
        path: '/articles/hello-world',
        requestId: 'req-1',
      });
    });

    it('moved (308)', () => {
      const rendered = renderer.render({ ...moved, status: 308 }, 'problem');
      expect(rendered.body).toStrictEqual({
        type: 'tag:nestjs-tombstones,2026:moved',
        title: 'Moved',
        status: 308,
        detail: "Article 'hello-world' has moved to /articles/hello-there?ref=x",
        instance: '/articles/hello-world',
        error: 'moved',
        resource: 'article',
        id: 'hello-world',
        location: '/articles/hello-there?ref=x',
        movedTo: 'hello-there',
        path: '/articles/hello-world',
        requestId: 'req-1',
      });
    });

    it('the JSON body facts are exactly the problem extension members', () => {
      for (const answer of [notFound, gone, moved]) {
        const { message, ...jsonFacts } = renderer.render(answer, 'json').body;
        const { type: _t, title: _ti, status: _s, detail, instance: _i, ...extensions } = renderer.render(answer, 'problem').body;
        expect(extensions).toStrictEqual(jsonFacts);
        expect(detail).toBe(message);
      }
    });
  });

  describe('hidden keys look exactly like keys that never existed', () => {
    // A hidden key and an unknown key both reach the renderer as the same 404 answer; only the
    // request-specific facts differ.
    const hidden: TombstoneAnswer = { ...notFound, id: 'secret-draft', path: '/articles/secret-draft', requestId: 'req-2' };
    const never: TombstoneAnswer = { ...notFound, id: 'no-such-thing', path: '/articles/no-such-thing', requestId: 'req-3' };

    it.each(['json', 'problem'] as const)('%s', (format) => {
      const a = renderer.render(hidden, format);
      const b = renderer.render(never, format);
      expect(a.contentType).toBe(b.contentType);
      expect(Object.keys(a.body)).toEqual(Object.keys(b.body));
      const normalise = (body: Record<string, unknown>, id: string) =>
        JSON.parse(JSON.stringify(body).split(id).join('<id>').replace(/req-\d/, '<requestId>')) as unknown;
      expect(normalise(a.body, 'secret-draft')).toStrictEqual(normalise(b.body, 'no-such-thing'));
      expect(a.body.id).toBe('secret-draft');
      expect(b.body.id).toBe('no-such-thing');
    });
  });

  describe('long ids', () => {
    it('shortens the id to 200 characters in the message but keeps it whole in id', () => {
      const id = `${'x'.repeat(200)}TAIL${'y'.repeat(5000)}`;
      const body = renderer.render({ ...notFound, id }, 'json').body;
      expect(body.message).toBe(`Article '${'x'.repeat(200)}…' was not found`);
      expect(body.id).toBe(id);
      const problem = renderer.render({ ...notFound, id }, 'problem').body;
      expect(problem.detail).toBe(`Article '${'x'.repeat(200)}…' was not found`);
      expect(problem.id).toBe(id);
    });

    it('leaves an id of exactly 200 characters alone', () => {
      const id = 'z'.repeat(200);
      expect(renderer.render({ ...gone, id }, 'json').body.message).toBe(`Article '${id}' was permanently deleted`);
    });
  });

  describe('subclasses', () => {
    class RetiredRenderer extends TombstoneRenderer {
      protected override message(answer: TombstoneAnswer): string {
        return answer.error === 'gone' ? 'This page was retired.' : super.message(answer);
      }
    }

    it('an overridden message is used in JSON and problem bodies', () => {
      const custom = new RetiredRenderer();
      expect(custom.render(gone, 'json').body.message).toBe('This page was retired.');
      expect(custom.render(gone, 'problem').body.detail).toBe('This page was retired.');
      expect(custom.render(gone, 'json').body.deletedAt).toBe('2024-05-01T12:00:00.000Z');
    });

    it('falls back to the default wording through super', () => {
      expect(new RetiredRenderer().render(notFound, 'json').body.message).toBe("Article 'hello-world' was not found");
    });

    it('can override facts too', () => {
      class NoRequestId extends TombstoneRenderer {
        protected override facts(answer: TombstoneAnswer): Record<string, unknown> {
          const { requestId: _drop, ...rest } = super.facts(answer);
          return rest;
        }
      }
      const body = new NoRequestId().render(notFound, 'problem').body;
      expect(body).not.toHaveProperty('requestId');
      expect(body.id).toBe('hello-world');
      expect(body.title).toBe('Not Found');
    });
  });

  describe('HTML pages', () => {
    const hostile = '<script>alert(1)</script><img src=x onerror=alert(2)>"\'&';
    const escaped = '&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;&quot;&#39;&amp;';

    it('escapes the five characters that matter in text and quoted attributes', () => {
      expect(escapeHtml(hostile)).toBe(escaped);
      expect(escapeHtml('plain text, é, ü')).toBe('plain text, é, ü');
      // Characters that reorder what is shown (Trojan Source) are shown as U+FFFD; others stay.
      expect(escapeHtml('abc\u202Egnp.exe')).toBe('abc\uFFFDgnp.exe');
      expect(escapeHtml('\u2066x\u2069 \u202A<y>\u202C')).toBe('\uFFFDx\uFFFD \uFFFD&lt;y&gt;\uFFFD');
      expect(escapeHtml('עברית and العربية, \u200F')).toBe('עברית and العربية, \u200F');
    });

    it('a 410: the status, what happened, when, why, and a link to the alternative', () => {
      const rendered = renderer.renderHtml(gone);
      expect(rendered.contentType).toBe('text/html; charset=utf-8');
      expect(rendered.body).toMatch(/^<!doctype html><html lang="en">/);
      expect(rendered.body).toContain('<title>410 Gone</title>');
      expect(rendered.body).toContain("<h1>Article &#39;hello-world&#39; was permanently deleted</h1>");
      expect(rendered.body).toContain('<time datetime="2024-05-01T12:00:00.000Z">May 1, 2024 at 12:00 PM UTC</time>');
      expect(rendered.body).toContain('<dt>Reason</dt><dd>Retired</dd>');
      expect(rendered.body).toContain('<dt>See instead</dt><dd><a href="/articles/current">/articles/current</a></dd>');
      expect(rendered.body).toContain('<main>');
      expect(rendered.body).toContain('<code>req-1</code>');
    });

    it('a 404 has no facts of a tombstone, and lists suggestions as links', () => {
      const page = renderer.renderHtml(notFound).body;
      expect(page).toContain('<h1>Article &#39;hello-world&#39; was not found</h1>');
      expect(page).not.toContain('<dl>');
      expect(page).not.toContain('Did you mean');
      const suggested = renderer.renderHtml({ ...notFound, suggestions: [{ id: 'hello-word', location: '/articles/hello-word' }, { id: '<b>', location: '/articles/%3Cb%3E' }] }).body;
      expect(suggested).toContain('<h2 id="suggestions">Did you mean</h2><ul aria-labelledby="suggestions"><li><a href="/articles/hello-word">hello-word</a></li><li><a href="/articles/%3Cb%3E">&lt;b&gt;</a></li></ul>');
    });

    it('a redirect links to where the resource lives now', () => {
      expect(renderer.renderHtml(moved).body).toContain('<dt>Now at</dt><dd><a href="/articles/hello-there?ref=x">/articles/hello-there?ref=x</a></dd>');
      expect(renderer.renderHtml(moved).body).toContain('<title>301 Moved Permanently</title>');
    });

    it('escapes every value: key, label, reason, alternative, request id', () => {
      const page = renderer.renderHtml({ ...gone, id: hostile, label: hostile, reason: hostile, alternative: hostile, requestId: hostile }).body;
      expect(page).not.toContain('<script>');
      expect(page).not.toContain('<img');
      expect(page).not.toMatch(/<a /);
      expect(page.split(escaped).length - 1).toBeGreaterThanOrEqual(4);
    });

    it.each([
      ['javascript:', 'javascript:alert(document.domain)'],
      ['JavaScript: with a case', 'JaVaScRiPt:alert(1)'],
      ['data:', 'data:text/html,<script>alert(1)</script>'],
      ['a protocol-relative URL', '//evil.example/'],
      ['a backslash trick', '/\\evil.example/'],
      ['a quote that would end the attribute', '/a" onmouseover="alert(1)'],
    ])('never makes a link of %s, in an alternative or a suggestion', (_name, url) => {
      const alternative = renderer.renderHtml({ ...gone, alternative: url }).body;
      const suggestion = renderer.renderHtml({ ...notFound, suggestions: [{ id: 'x', location: url }] }).body;
      for (const page of [alternative, suggestion]) {
        expect(page).not.toMatch(/<a /);
        expect(page).not.toContain('onmouseover="');
      }
      expect(alternative).toContain(`<dd>${escapeHtml(url)}</dd>`);
    });

    it('links to an absolute http(s) alternative', () => {
      expect(renderer.renderHtml({ ...gone, alternative: 'https://example.com/new?a=1&b=2' }).body).toContain('<a href="https://example.com/new?a=1&amp;b=2">');
    });

    it('a hidden key and an unknown key are the same answer, so the same page', () => {
      expect(renderer.renderHtml({ ...notFound }).body).toBe(renderer.renderHtml(notFound).body);
    });

    it('the policy allows the page\'s one style by its hash, and nothing else', () => {
      const rendered = renderer.renderHtml(gone);
      const style = /<style>(.*?)<\/style>/s.exec(rendered.body)![1];
      const hash = createHash('sha256').update(style).digest('base64');
      expect(rendered.headers['Content-Security-Policy']).toBe(
        `default-src 'none'; style-src 'sha256-${hash}'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
      );
      expect(rendered.body).not.toMatch(/<script|<link|style="/);
    });

    it('a subclass translates the texts, restyles the page (the policy follows), or writes its own page', () => {
      class German extends TombstoneRenderer {
        protected override message(answer: TombstoneAnswer): string {
          return answer.error === 'gone' ? `${answer.label} „${answer.id}“ wurde gelöscht` : super.message(answer);
        }
        protected override htmlTexts(answer: TombstoneAnswer) {
          return { ...super.htmlTexts(answer), lang: 'de', status: `${answer.status} Nicht mehr da`, deleted: 'Gelöscht', reason: 'Grund', alternative: 'Stattdessen' };
        }
        protected override htmlStyle(): string {
          return 'body{font-family:serif}';
        }
      }
      const rendered = new German().renderHtml(gone);
      expect(rendered.body).toMatch(/^<!doctype html><html lang="de">/);
      expect(rendered.body).toContain('<h1>Article „hello-world“ wurde gelöscht</h1>');
      expect(rendered.body).toContain('<dt>Gelöscht</dt><dd><time datetime="2024-05-01T12:00:00.000Z">1. Mai 2024 um 12:00 UTC</time></dd>');
      expect(rendered.body).toContain('<style>body{font-family:serif}</style>');
      expect(rendered.headers['Content-Security-Policy']).toContain(`'sha256-${createHash('sha256').update('body{font-family:serif}').digest('base64')}'`);

      class Own extends TombstoneRenderer {
        protected override page(answer: TombstoneAnswer): string {
          return `<!doctype html><title>${this.escape(answer.id)}</title><p>${this.href('javascript:x') ?? 'no link'}</p>`;
        }
      }
      expect(new Own().renderHtml({ ...gone, id: '<x>' }).body).toBe('<!doctype html><title>&lt;x&gt;</title><p>no link</p>');
    });
  });
});

describe('TombstoneRenderer: suggestions', () => {
  const renderer = new TombstoneRenderer();
  const suggestions = [
    { id: 'hello-world', location: '/articles/hello-world' },
    { id: 'hello wörld', location: '/articles/hello%20w%C3%B6rld' },
  ];

  it('a 404 carries them after its id, in JSON and in problem details', () => {
    const answer: TombstoneAnswer = { ...notFound, id: 'hello-wrold', path: '/articles/hello-wrold', suggestions };
    const json = renderer.render(answer, 'json').body;
    expect(Object.keys(json)).toEqual(['error', 'message', 'resource', 'id', 'suggestions', 'path', 'requestId']);
    expect(json.suggestions).toStrictEqual(suggestions);
    expect(renderer.render(answer, 'problem').body).toMatchObject({ status: 404, suggestions });
  });

  it('none, or an empty list, adds no member; a 410 or a redirect never carries them', () => {
    expect(renderer.render({ ...notFound, suggestions: [] }, 'json').body).not.toHaveProperty('suggestions');
    expect(renderer.render(notFound, 'problem').body).not.toHaveProperty('suggestions');
    expect(renderer.render({ ...gone, suggestions }, 'json').body).not.toHaveProperty('suggestions');
    expect(renderer.render({ ...moved, suggestions }, 'json').body).not.toHaveProperty('suggestions');
  });
});
