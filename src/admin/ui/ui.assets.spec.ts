import vm from 'node:vm';
import { UI_ASSETS } from './ui.assets.js';

describe('the admin page files', () => {
  const scripts = [...UI_ASSETS].filter(([name]) => name.endsWith('.js'));

  it.each(scripts)('%s is a JavaScript module that parses', (name, { body }) => {
    // Jest runs with --experimental-vm-modules, which gives vm.SourceTextModule.
    const SourceTextModule = (vm as unknown as { SourceTextModule: new (code: string, options: object) => unknown }).SourceTextModule;
    expect(() => new SourceTextModule(body, { identifier: name })).not.toThrow();
  });

  it.each(scripts)('%s never parses text as HTML', (_name, { body }) => {
    expect(body).not.toMatch(/\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write|createContextualFragment|DOMParser|eval\(|new Function/);
  });

  it.each(scripts)('%s imports only its siblings', (_name, { body }) => {
    for (const [, specifier] of body.matchAll(/\bfrom '([^']+)'/g)) {
      expect(UI_ASSETS.has(specifier.replace(/^\.\//, ''))).toBe(true);
    }
  });
});

describe('the admin page scripts, linted as browser modules', () => {
  // The browser globals the page uses; anything else is a mistake no-undef reports.
  const BROWSER = ['document', 'window', 'location', 'sessionStorage', 'fetch', 'URL', 'FormData', 'setTimeout', 'console'];

  it.each([...UI_ASSETS].filter(([name]) => name.endsWith('.js')))('%s passes eslint:recommended', async (name, { body }) => {
    const { Linter } = await import('eslint');
    const { default: js } = await import('@eslint/js');
    const messages = new Linter().verify(body, [
      js.configs.recommended,
      {
        languageOptions: {
          ecmaVersion: 2024,
          sourceType: 'module',
          globals: Object.fromEntries(BROWSER.map((global) => [global, 'readonly'])),
        },
        rules: { 'no-unused-vars': 'error' },
      },
    ], name);
    expect(messages.map(({ line, message }) => `${name}:${line}: ${message}`)).toEqual([]);
  });
});
