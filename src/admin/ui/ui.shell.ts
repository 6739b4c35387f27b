// The page's HTML and CSS. The HTML is a shell with no data at all: the scripts fetch every datum
// from the guarded endpoints. No inline script or style, so the page runs under script-src 'self'.

/** The admin page's HTML; `assets` is the URL path its files are served under (`/admin/ui`). */
export function adminPage(assets: string): string {
  const base = escapeAttribute(assets);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Tombstones admin</title>
<link rel="icon" href="${base}/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="${base}/app.css">
<script type="module" src="${base}/app.js"></script>
</head>
<body>
<a class="skip" href="#main">Skip to the content</a>
<header class="top">
<p class="brand">Tombstones admin</p>
<nav id="nav" aria-label="Sections" hidden>
<ul>
<li><a href="#tombstones">Tombstones</a></li>
<li><a href="#misses">Misses</a></li>
<li><a href="#transfer">Import and export</a></li>
</ul>
</nav>
<button type="button" id="sign-out" hidden>Sign out</button>
</header>
<main id="main" tabindex="-1">
<h1 class="visually-hidden">Tombstones admin</h1>
<div id="status" role="status" aria-live="polite" aria-atomic="true"></div>
<div id="alert" role="alert" aria-atomic="true"></div>
<section id="sign-in" hidden></section>
<section id="view" aria-labelledby="screen-title"></section>
<noscript><p>This page needs JavaScript.</p></noscript>
</main>
</body>
</html>
`;
}

function escapeAttribute(value: string): string {
  return value.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
}

/** The page's icon (a browser asks for one; without it, every load logs a 404). */
export const ICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><path fill="#57606a" d="M4 15V6a4 4 0 0 1 8 0v9z"/><path fill="#fff" d="M7.25 5h1.5v2h1.75v1.5H8.75V12h-1.5V8.5H5.5V7h1.75z"/></svg>';

export const APP_CSS = `
:root { color-scheme: light; --ink: #1b1f24; --muted: #57606a; --line: #d0d7de; --accent: #0b57d0; --bad: #b3261e; --bg: #fff; --soft: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: var(--bg); }
.skip { position: absolute; left: -999px; top: 0; background: var(--bg); padding: .5rem; }
.skip:focus { left: .5rem; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%); white-space: nowrap; }
.top { display: flex; align-items: center; gap: 1.5rem; padding: .6rem 1.5rem; border-bottom: 1px solid var(--line); background: var(--soft); }
.brand { font-weight: 700; margin: 0; }
nav ul { display: flex; gap: 1rem; list-style: none; margin: 0; padding: 0; }
nav a { color: var(--accent); text-decoration: none; padding: .25rem .1rem; }
nav a[aria-current="page"] { color: var(--ink); font-weight: 600; border-bottom: 3px solid var(--accent); }
#sign-out { margin-left: auto; }
main { padding: 1rem 1.5rem 3rem; max-width: 84rem; }
h2 { margin: .5rem 0 1rem; font-size: 1.35rem; }
h3 { margin: 1.5rem 0 .5rem; font-size: 1.1rem; }
h4 { margin: 1rem 0 .25rem; }
.screen-head { display: flex; align-items: center; justify-content: space-between; }
.intro, .hint { color: var(--muted); }
.hint { font-size: .85rem; margin: .2rem 0 0; }
#status:not(:empty) { padding: .5rem .75rem; border-left: 4px solid #1a7f37; background: #dafbe1; margin-bottom: 1rem; }
#alert:not(:empty), .error:not(:empty) { padding: .5rem .75rem; border-left: 4px solid var(--bad); background: #ffebe9; color: var(--bad); margin: .5rem 0; }
form.filters { display: flex; flex-wrap: wrap; gap: .75rem 1rem; align-items: flex-end; padding: .75rem; background: var(--soft); border: 1px solid var(--line); border-radius: 6px; }
.field { display: flex; flex-direction: column; gap: .2rem; margin-bottom: .6rem; }
.field[hidden] { display: none; }
.filters .field { margin: 0; }
.field.checkbox { flex-direction: row; align-items: center; gap: .4rem; }
label { font-weight: 600; font-size: .9rem; }
input, select, textarea { font: inherit; padding: .35rem .5rem; border: 1px solid #8c959f; border-radius: 4px; min-width: 12rem; }
input[type="checkbox"] { min-width: 0; }
textarea { width: 100%; font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; }
[aria-invalid="true"] { border-color: var(--bad); outline: 2px solid var(--bad); }
button { font: inherit; padding: .35rem .8rem; border: 1px solid #8c959f; border-radius: 4px; background: var(--bg); cursor: pointer; }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
button:disabled { opacity: .5; cursor: not-allowed; }
button.link { border: 0; background: none; color: var(--accent); text-decoration: underline; padding: .1rem; }
:focus-visible { outline: 3px solid #f9a825; outline-offset: 2px; }
.actions { display: flex; gap: .5rem; margin-top: .5rem; }
.results { margin-top: 1rem; overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
caption { text-align: left; font-weight: 600; padding: .4rem 0; }
th, td { text-align: left; vertical-align: top; padding: .4rem .5rem; border-bottom: 1px solid var(--line); }
thead th { background: var(--soft); font-size: .85rem; }
tbody th { font-weight: 400; }
.key { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; overflow-wrap: anywhere; }
.row-actions { display: flex; gap: .35rem; white-space: nowrap; }
.row-actions button { padding: .15rem .5rem; font-size: .85rem; }
.pager { display: flex; gap: .75rem; align-items: center; margin-top: .75rem; }
.empty { color: var(--muted); }
.suggestions { list-style: none; display: flex; flex-wrap: wrap; gap: .5rem; padding: 0; margin: .2rem 0; }
dialog { border: 1px solid var(--line); border-radius: 8px; padding: 1.25rem 1.5rem; width: min(34rem, 95vw); }
dialog::backdrop { background: rgba(27, 31, 36, .45); }
dialog .field:not(.checkbox) input, dialog .field textarea, dialog .field select { width: 100%; }
dialog .field.checkbox label { font-weight: 400; }
form.import, form.export { max-width: 46rem; }
`;
