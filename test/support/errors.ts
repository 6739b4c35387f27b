import { TombstoneError, TombstoneValidationError } from '../../src/tombstone.exceptions.js';

/** Runs `fn`, expects it to throw a TombstoneValidationError and returns it. */
export function validationErrorOf(fn: () => unknown): TombstoneValidationError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(TombstoneValidationError);
    expect(error).toBeInstanceOf(TombstoneError);
    expect(error).toBeInstanceOf(Error);
    return error as TombstoneValidationError;
  }
  throw new Error('expected a TombstoneValidationError, but nothing was thrown');
}
