// api.js, served at <mount>/ui/api.js: every request the page makes, with the operator's
// credentials. Browser code, sent as it is written here (no build step): no template literals.
export const API_JS = String.raw`
const TOKEN_KEY = 'nestjs-tombstones.admin-token';

/** The admin endpoints: this module is served at <mount>/ui/api.js, the endpoints at <mount>/. */
export const apiBase = new URL('../', import.meta.url);

/** A refused request: the status, the answer's body when it was JSON, and a readable message. */
export class ApiError extends Error {
  constructor(status, body) {
    super(messageOf(status, body));
    this.status = status;
    this.body = body;
  }

  get unauthenticated() {
    return this.status === 401 || this.status === 403;
  }

  /** The fields the server named, with why: [{ field, reason }]. */
  get fieldErrors() {
    return this.body && Array.isArray(this.body.errors) ? this.body.errors : [];
  }
}

function messageOf(status, body) {
  if (body && typeof body === 'object') {
    if (Array.isArray(body.errors) && body.errors.length) {
      return body.errors.map((error) => error.field + ': ' + error.reason).join('; ');
    }
    if (typeof body.message === 'string') return body.message + (body.id ? ' (tombstone ' + body.id + ')' : '');
    if (Array.isArray(body.message)) return body.message.join('; ');
  }
  if (status === 401 || status === 403) return 'Not signed in, or not allowed (' + status + ').';
  return 'The server answered ' + status + '.';
}

/**
 * The bearer token typed in, kept for this tab only (sessionStorage: gone when the tab closes).
 * Without one, requests carry the app's same-origin cookies alone.
 */
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

let unauthenticated = () => {};

/** What to do when the server refuses the credentials (401 or 403): app.js hides every datum. */
export function onUnauthenticated(listener) {
  unauthenticated = listener;
}

/**
 * Calls an admin endpoint (a path relative to the mount: 'tombstones', 'tombstone-misses/7').
 * Answers the parsed JSON (null for a 204), or the Response itself with raw: true; throws an
 * ApiError for any other status.
 */
export async function request(path, options = {}) {
  const { method = 'GET', query = {}, json, body, contentType, raw = false } = options;
  const url = new URL(path, apiBase);
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(name, String(value));
  }
  const headers = { accept: raw ? '*/*' : 'application/json' };
  const bearer = token.get();
  if (bearer) headers.authorization = 'Bearer ' + bearer;
  let payload = body;
  if (json !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(json);
  } else if (contentType) {
    headers['content-type'] = contentType;
  }
  const response = await fetch(url, { method, headers, body: payload, credentials: 'same-origin', cache: 'no-store', redirect: 'error' });
  if (!response.ok) {
    // A refusal's body is JSON from the module (or the app's guard); anything else has no details.
    const parsed = await response.json().catch(() => null);
    const error = new ApiError(response.status, parsed);
    if (error.unauthenticated) unauthenticated(error);
    throw error;
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}
`;
