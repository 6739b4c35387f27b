import { LIMITS } from './tombstone.constants.js';
import { assertAlternative, isSafeLink } from './tombstone.validation.js';
import { validationErrorOf } from '../test/support/errors.js';


describe('isSafeLink / assertAlternative', () => {
  describe('accepts', () => {
    it.each([
      '/articles/current',
      '/',
      '/a',
      '/articles/current?page=2&sort=desc#top',
      '/%2F%2Fevil.example', // percent-encoded slashes stay in the path
      '/a//b',
      'https://example.com/x',
      'https://example.com',
      'http://example.com/x?y=1',
      'https://example.com:8443/x',
    ])('%j', (value) => {
      expect(isSafeLink(value)).toBe(true);
      expect(assertAlternative(value)).toBe(value);
    });

    it(`a link of exactly ${LIMITS.alternativeLength} characters`, () => {
      const value = `/${'a'.repeat(LIMITS.alternativeLength - 1)}`;
      expect(value.length).toBe(2048);
      expect(isSafeLink(value)).toBe(true);
    });
  });

  describe('rejects', () => {
    it.each([
      ['empty', ''],
      ['protocol-relative', '//evil.example'],
      ['protocol-relative with path', '//evil.example/x'],
      ['triple slash', '///evil.example'],
      ['slash-backslash', '/\\evil.example'],
      ['backslash-backslash', '\\\\evil.example'],
      ['backslash in an absolute URL', 'https:\\\\evil.example'],
      ['javascript:', 'javascript:alert(1)'],
      ['JavaScript: mixed case', 'JavaScript:alert(1)'],
      ['data:', 'data:text/html,<script>alert(1)</script>'],
      ['data: without brackets', 'data:text/plain,hi'],
      ['vbscript:', 'vbscript:msgbox(1)'],
      ['ftp:', 'ftp://example.com/x'],
      ['file:', 'file:///etc/passwd'],
      ['mailto:', 'mailto:a@example.com'],
      ['relative without slash', 'articles/current'],
      ['dot-relative', './x'],
      ['bare host', 'evil.example'],
      ['query only', '?x=1'],
      ['fragment only', '#x'],
      ['fullwidth solidus', '／evil'],
      ['fullwidth double solidus', '／／evil.example'],
      ['CRLF header injection', '/x\r\nSet-Cookie: a=1'],
      ['LF', '/x\ny'],
      ['CR', '/x\ry'],
      ['tab', '/x\ty'],
      ['tab in scheme', 'java\tscript:alert(1)'],
      ['leading tab before //', '\t//evil.example'],
      ['NUL', '/x\u0000'],
      ['DEL', '/x\u007f'],
      ['space', '/x y'],
      ['leading space', ' /x'],
      ['trailing space', '/x '],
      ['no-break space', '/x\u00a0y'],
      ['line separator', '/x\u2028y'],
      ['less-than', '/x<script>'],
      ['greater-than', '/x>'],
      ['double quote', '/x"; rel="next'],
      ['backtick', '/x`'],
      ['braces', '/x{y}'],
      ['pipe', '/x|y'],
      ['caret', '/x^y'],
      ['credentials', 'https://u:p@x.com'],
      ['user only', 'https://u@x.com/'],
      ['password only', 'https://:p@x.com/'],
      ['empty host', 'https://'],
    ])('%s: %j', (_label, value) => {
      expect(isSafeLink(value)).toBe(false);
      const error = validationErrorOf(() => assertAlternative(value));
      expect(error.field).toBe('alternative');
    });

    it('a link one character too long', () => {
      const value = `/${'a'.repeat(LIMITS.alternativeLength)}`;
      expect(value.length).toBe(2049);
      expect(isSafeLink(value)).toBe(false);
      expect(validationErrorOf(() => assertAlternative(value)).field).toBe('alternative');
    });

    it('non-strings', () => {
      for (const value of [42, {}, ['/x'], true, new URL('https://example.com/')]) {
        expect(validationErrorOf(() => assertAlternative(value)).field).toBe('alternative');
      }
    });
  });

  it("rejects 'https:evil.example' (no slashes): its meaning depends on the page it is resolved against", () => {
    // WHATWG URL parsing: without a base it is https://evil.example/; against an https page it
    // is a relative path; against an http page it is https://evil.example/. An ambiguous link is
    // no link: absolute URLs must spell out 'http(s)://host'.
    const value = 'https:evil.example';
    expect(isSafeLink(value)).toBe(false);
    expect(isSafeLink('http:evil.example')).toBe(false);
    expect(isSafeLink('https:///evil.example')).toBe(false);
    expect(new URL(value).href).toBe('https://evil.example/');
    expect(new URL(value, 'https://site.test/page').href).toBe('https://site.test/evil.example');
    expect(new URL(value, 'http://site.test/page').href).toBe('https://evil.example/');
  });

  it('every accepted link leaves the origin only as an explicit absolute http(s) URL with a hostname and no credentials', () => {
    const candidates = [
      '/articles/current',
      '//evil.example',
      '/\\evil.example',
      '\\/evil.example',
      '/%5Cevil.example',
      '/.//evil.example',
      'https://example.com/x',
      'https:evil.example',
      'http:evil.example',
      'https:///evil.example',
      'https://@x.com/',
      'https://u:p@x.com',
      'javascript:alert(1)',
      'jAvAsCrIpT:alert(1)',
      '／evil',
      '/／evil',
      'https://ｅｖｉｌ.example/x',
      ' https://evil.example',
      '\u0000//evil.example',
      '/\t/evil.example',
      '/\r\n/evil.example',
    ];
    const accepted: string[] = [];
    for (const base of ['https://site.test/some/page', 'http://site.test/some/page']) {
      const origin = new URL(base).origin;
      for (const value of candidates) {
        if (!isSafeLink(value)) continue;
        accepted.push(value);
        const resolved = new URL(value, base);
        if (resolved.origin === origin) continue; // stays on this site
        // Leaves the origin: only as an explicit absolute http(s) URL, to the host it names.
        const absolute = new URL(value);
        expect({
          value,
          base,
          protocol: absolute.protocol,
          hasHostname: absolute.hostname !== '',
          credentials: absolute.username + absolute.password,
          target: resolved.origin,
        }).toEqual({
          value,
          base,
          protocol: expect.stringMatching(/^https?:$/),
          hasHostname: true,
          credentials: '',
          target: absolute.origin,
        });
      }
    }
    // The (ASCII) candidates that pass at all, so the property above is not vacuous. The
    // non-ASCII candidates are left out here: see the Link header test below.
    const asciiAccepted = [...new Set(accepted)].filter((value) => /^[\x21-\x7e]+$/.test(value));
    expect(asciiAccepted.sort()).toEqual(
      [
        '/%5Cevil.example',
        '/.//evil.example',
        '/articles/current',
        'https://@x.com/',
        'https://example.com/x',
      ].sort(),
    );
  });

  it('maps undefined and null to null', () => {
    expect(assertAlternative(undefined)).toBeNull();
    expect(assertAlternative(null)).toBeNull();
  });

  it('gives both shapes as potential solutions', () => {
    const error = validationErrorOf(() => assertAlternative('//evil.example'));
    expect(error.field).toBe('alternative');
    expect(error.message).toContain('Invalid alternative "//evil.example".');
    expect(error.message).toContain('Potential solutions:');
    expect(error.message).toContain("- Use a path on this site that starts with a single '/', e.g. '/articles/current'.");
    expect(error.message).toContain("- Or an absolute 'https://' URL");
  });

  it('echoes at most 200 characters of a hostile value', () => {
    const error = validationErrorOf(() => assertAlternative(`//${'x'.repeat(5000)}`));
    expect(error.message).toContain(`"//${'x'.repeat(198)}"`);
    expect(error.message).not.toContain('x'.repeat(199));
  });

  // The value is written verbatim into `Link: <...>; rel="alternate"` (TombstoneResponseWriter),
  // and Node refuses header values with characters above U+00FF (ERR_INVALID_CHAR), while
  // U+0080..U+00FF go out as Latin-1 bytes, not UTF-8. So an accepted link must be printable ASCII.
  it.each(['/artículos/actual', '/日本語', 'https://例え.jp/', 'https://example.com/ü'])(
    'rejects the non-ASCII link %j, which cannot be sent verbatim in a Link header',
    (value) => {
      expect(isSafeLink(value)).toBe(false);
    },
  );
});
