// app.js, served at <mount>/ui/app.js: signs in, switches screens, and hides every datum when the
// server refuses the credentials. Browser code, sent as written (no template literals).
export const APP_JS = String.raw`
import { onUnauthenticated, request, token } from './api.js';
import { alertError, announce, closeDialogs, field, focusOn, h } from './dom.js';
import { missesScreen } from './misses.js';
import { tombstonesScreen } from './tombstones.js';
import { transferScreen } from './transfer.js';

const SCREENS = { tombstones: tombstonesScreen, misses: missesScreen, transfer: transferScreen };

const view = document.getElementById('view');
const nav = document.getElementById('nav');
const signOut = document.getElementById('sign-out');
const signIn = document.getElementById('sign-in');

/** Data is shown only while the server accepts the credentials: otherwise nothing but this form. */
function showSignIn(message) {
  closeDialogs();
  view.replaceChildren();
  nav.hidden = true;
  signOut.hidden = true;
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', spellcheck: 'false' });
  const form = h(
    'form',
    { 'aria-labelledby': 'sign-in-title' },
    h('h2', { id: 'sign-in-title', text: 'Sign in' }),
    h('p', { text: message }),
    h('p', { class: 'hint', text: 'If the application signs you in with a session, sign in there and reload this page. Otherwise paste an admin token: it is sent as Authorization: Bearer and kept for this tab only.' }),
    field('Admin token', input),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', text: 'Sign in' })),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (!value) {
      alertError('Paste a token to sign in.');
      input.focus();
      return;
    }
    token.set(value);
    if (await probe()) {
      announce('Signed in.');
      show();
    } else {
      token.clear();
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    }
  });
  signIn.replaceChildren(form);
  signIn.hidden = false;
  input.focus();
}

onUnauthenticated((error) => {
  token.clear();
  showSignIn(error.status === 403 ? 'These credentials may not use the admin (403).' : 'Not signed in, or the token was refused (401).');
  alertError(error.status === 403 ? 'Access refused (403).' : 'Sign-in needed (401).');
});

/** Whether the server accepts the credentials at hand (a token, or the app's cookies). */
async function probe() {
  try {
    await request('tombstones', { query: { limit: 1 } });
    return true;
  } catch (error) {
    if (!error.unauthenticated) alertError('The admin endpoints did not answer: ' + error.message);
    return false;
  }
}

function current() {
  const name = location.hash.slice(1);
  return Object.hasOwn(SCREENS, name) ? name : 'tombstones';
}

/** Draws the screen the address names; focus goes to its heading when the operator moved. */
function show(moved = false) {
  signIn.hidden = true;
  signIn.replaceChildren();
  nav.hidden = false;
  signOut.hidden = !token.get();
  const name = current();
  for (const link of nav.querySelectorAll('a')) {
    if (link.getAttribute('href') === '#' + name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const { heading } = SCREENS[name](view);
  document.title = heading.textContent + ' · Tombstones admin';
  if (moved) {
    // The last screen's news is old news on this one.
    document.getElementById('status').textContent = '';
    document.getElementById('alert').textContent = '';
    focusOn(heading);
  }
}

window.addEventListener('hashchange', () => {
  if (!nav.hidden) show(true);
});
signOut.addEventListener('click', () => {
  token.clear();
  showSignIn('Signed out.');
  announce('Signed out.');
});

if (await probe()) show();
else if (signIn.hidden && !view.childElementCount) showSignIn('Sign in to see the tombstones.');
`;
