// suggest.js, served at <mount>/ui/suggest.js: the target picker's suggestions. Browser code,
// sent as written (no template literals).
export const SUGGEST_JS = String.raw`
import { request } from './api.js';

const MAX_SUGGESTIONS = 5;
const CANDIDATES = 200;

/**
 * Keys a miss may redirect to, best first: the live keys the module would suggest for it (its
 * type's tracked table and live redirects' targets, ranked by the database), then the targets of
 * the newest redirects of the same scope and type, ranked here by how much they look like the
 * missed key.
 */
export async function suggestTargets({ id, scope, type, key }) {
  const seen = new Set();
  if (id) {
    const { keys } = await request('tombstone-misses/' + encodeURIComponent(id) + '/suggestions');
    for (const live of keys) if (live !== key) seen.add(live);
  }
  const live = [...seen];
  for (const kind of ['moved', 'merged']) {
    const { items } = await request('tombstones', { query: { scope, type, kind, limit: CANDIDATES } });
    for (const item of items) if (item.target && item.target !== key) seen.add(item.target);
  }
  const targets = [...seen]
    .filter((candidate) => !live.includes(candidate))
    .map((candidate) => ({ candidate, score: similarity(key, candidate) }))
    .filter(({ score }) => score > 0)
    .sort((a, b) => b.score - a.score || a.candidate.localeCompare(b.candidate))
    .map(({ candidate }) => candidate);
  return [...live, ...targets].slice(0, MAX_SUGGESTIONS);
}

/** Dice's coefficient over character pairs: 1 for equal strings, 0 for nothing in common. */
export function similarity(a, b) {
  const pairs = (text) => {
    const counts = new Map();
    const lower = text.toLowerCase();
    for (let i = 0; i < lower.length - 1; i += 1) {
      const pair = lower.slice(i, i + 2);
      counts.set(pair, (counts.get(pair) || 0) + 1);
    }
    return counts;
  };
  const left = pairs(a);
  const right = pairs(b);
  let shared = 0;
  let total = 0;
  for (const count of left.values()) total += count;
  for (const count of right.values()) total += count;
  for (const [pair, count] of left) shared += Math.min(count, right.get(pair) || 0);
  return total === 0 ? 0 : (2 * shared) / total;
}
`;
