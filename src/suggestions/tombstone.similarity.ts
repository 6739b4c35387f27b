// "Did you mean": how alike two keys are, as pg_trgm counts it, for ranking where PostgreSQL
// cannot (no pg_trgm). A leaf: it imports nothing.

/** Most suggestions an answer carries. */
export const MAX_SUGGESTIONS = 3;
/** Least trigram similarity of a suggestion: pg_trgm's default `similarity_threshold`. */
export const MIN_SIMILARITY = 0.3;

/** Candidates at least `MIN_SIMILARITY` alike, most alike first (then by key), at most 3. */
export function rankBySimilarity(key: string, candidates: readonly string[]): readonly string[] {
  const wanted = trigrams(key);
  return [...new Set(candidates)]
    .filter((candidate) => candidate !== key)
    .map((candidate) => ({ candidate, score: similarity(wanted, trigrams(candidate)) }))
    .filter(({ score }) => score >= MIN_SIMILARITY)
    .sort((a, b) => b.score - a.score || (a.candidate < b.candidate ? -1 : a.candidate > b.candidate ? 1 : 0))
    .slice(0, MAX_SUGGESTIONS)
    .map(({ candidate }) => candidate);
}

/**
 * The trigrams of a text as pg_trgm counts them: lower case, each word (letters and digits) with
 * two spaces before and one after.
 */
export function trigrams(text: string): Set<string> {
  const found = new Set<string>();
  for (const word of text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? []) {
    const padded = [...`  ${word} `];
    for (let i = 0; i + 3 <= padded.length; i++) found.add(padded.slice(i, i + 3).join(''));
  }
  return found;
}

/** pg_trgm's `similarity()`: shared trigrams over all trigrams of both. */
export function similarity(a: Set<string>, b: Set<string>): number {
  if (a.size === 0 || b.size === 0) return 0;
  let shared = 0;
  for (const trigram of a) if (b.has(trigram)) shared++;
  return shared / (a.size + b.size - shared);
}
