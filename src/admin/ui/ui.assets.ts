import { API_JS } from './ui.client-api.js';
import { APP_JS } from './ui.client-app.js';
import { DOM_JS } from './ui.client-dom.js';
import { MISSES_JS } from './ui.client-misses.js';
import { SUGGEST_JS } from './ui.client-suggest.js';
import { TOMBSTONES_JS } from './ui.client-tombstones.js';
import { TRANSFER_JS } from './ui.client-transfer.js';
import { APP_CSS, ICON_SVG } from './ui.shell.js';

export interface UiAsset {
  readonly type: string;
  readonly body: string;
}

const script = (body: string): UiAsset => ({ type: 'text/javascript; charset=utf-8', body });

/**
 * The admin page's files, by the name they are served under (`<mount>/ui/<name>`). Shipped as
 * strings in the package's JavaScript: nothing to copy at build time, nothing to find on disk.
 */
export const UI_ASSETS: ReadonlyMap<string, UiAsset> = new Map([
  ['app.js', script(APP_JS)],
  ['api.js', script(API_JS)],
  ['dom.js', script(DOM_JS)],
  ['tombstones.js', script(TOMBSTONES_JS)],
  ['misses.js', script(MISSES_JS)],
  ['suggest.js', script(SUGGEST_JS)],
  ['transfer.js', script(TRANSFER_JS)],
  ['app.css', { type: 'text/css; charset=utf-8', body: APP_CSS }],
  ['icon.svg', { type: 'image/svg+xml', body: ICON_SVG }],
]);
