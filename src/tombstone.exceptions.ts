/**
 * Base class of every error the module throws at its callers. Each one says what went wrong and
 * ends with what to do about it.
 */
export class TombstoneError extends Error {
  constructor(message: string, solutions: readonly string[] = []) {
    super(
      solutions.length === 0
        ? message
        : `${message}\n\nPotential solutions:\n${solutions.map((s) => `- ${s}`).join('\n')}`,
    );
    this.name = this.constructor.name;
  }
}

/** A module option or decorator argument is invalid; thrown at bootstrap or decoration time. */
export class TombstoneConfigurationError extends TombstoneError {}

/** A value passed to the recording API is invalid (empty key, NUL byte, unsafe link, ...). */
export class TombstoneValidationError extends TombstoneError {
  constructor(
    /** The offending field, e.g. `key` or `alternative`. */
    readonly field: string,
    message: string,
    solutions: readonly string[] = [],
  ) {
    super(message, solutions);
  }
}

/**
 * Redirects would lead in a circle (a → b → … → a), or a key would redirect to itself (a cycle
 * of one: `cycle` is `[a, a]`).
 */
export class TombstoneCycleError extends TombstoneError {
  constructor(
    readonly type: string,
    /** The keys of the cycle, in order; the first one is repeated at the end. */
    readonly cycle: readonly string[],
  ) {
    super(
      cycle.length === 2 && cycle[0] === cycle[1]
        ? `Cannot move or merge ${type} '${preview(cycle[0])}' onto itself (a cycle of one).`
        : `The redirects of ${type} would form a cycle: ${cycle.map((k) => `'${preview(k)}'`).join(' → ')}.`,
      cycle.length === 2 && cycle[0] === cycle[1]
        ? ['Drop the move: a key that stays where it is needs no tombstone.']
        : [
            'Say where each key lives now: every chain must end at a key that has not moved.',
            'To move a key back to a name it had before, record that single move on its own: it revives the target key.',
          ],
    );
  }
}

/** Shortens a key for a message: keys are user input and may be kilobytes long. */
export function preview(key: string, max = 120): string {
  const escaped = JSON.stringify(key).slice(1, -1);
  return escaped.length <= max ? escaped : `${escaped.slice(0, max)}…`;
}
