import { TombstoneCycleError, TombstoneValidationError } from '../tombstone.exceptions.js';

/**
 * Where each redirect of a batch ends. Writes keep every redirect one hop long (its target is a
 * key that does not redirect), so a batch is collapsed before it is written: `a→b, b→c` stores
 * `a→c, b→c`.
 *
 * `batch` maps each key the batch writes to its target (`null`: the batch gives it a tombstone
 * that is not a redirect, which ends a walk). `tableHop` tells where a key that the batch does
 * not write redirects in the table (`undefined`: it does not); pass `() => undefined` when the
 * batch's targets are revived (a move makes its target live). The table has no chains, so a
 * key reached through the table's redirect only goes on when the batch writes it.
 *
 * `onCycle` is told of each source whose walk comes back to a key already on its way (the path,
 * the repeated key last); that source is left out of the answer.
 */
export function collapseChains(
  batch: ReadonlyMap<string, string | null>,
  tableHop: (key: string) => string | undefined,
  onCycle: (source: string, path: string[]) => void,
): Map<string, string> {
  const finals = new Map<string, string>();
  for (const [source, target] of batch) {
    if (target === null) continue;
    const path = [source];
    let current = target;
    let fromTable = false;
    let cyclic = false;
    for (;;) {
      if (path.includes(current)) {
        onCycle(source, [...path, current]);
        cyclic = true;
        break;
      }
      if (batch.has(current)) {
        const next = batch.get(current) as string | null;
        if (next === null) break;
        path.push(current);
        current = next;
        fromTable = false;
        continue;
      }
      if (fromTable) break;
      const hop = tableHop(current);
      if (hop === undefined) break;
      path.push(current);
      current = hop;
      fromTable = true;
    }
    if (!cyclic) finals.set(source, current);
  }
  return finals;
}

/**
 * Checks a batch of moves of one type (each source has one target, none is its own target, no
 * cycle) and answers where each source finally lives, through the batch alone: the batch's
 * targets are revived by the move, so the table's redirects do not extend them.
 */
export function collapseMoves(type: string, moves: readonly { from: string; to: string }[]): Map<string, string> {
  const batch = new Map<string, string>();
  for (const { from, to } of moves) {
    if (from === to) throw new TombstoneCycleError(type, [from, to]);
    const earlier = batch.get(from);
    if (earlier !== undefined && earlier !== to) {
      throw new TombstoneValidationError('moves', `The batch moves '${from.slice(0, 120)}' to two different keys.`, [
        'Give each source key one target.',
      ]);
    }
    batch.set(from, to);
  }
  return collapseChains(batch, () => undefined, (_source, path) => {
    throw new TombstoneCycleError(type, path.slice(path.indexOf(path[path.length - 1])));
  });
}
