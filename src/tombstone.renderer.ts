import { Injectable } from '@nestjs/common';
import { type TombstoneAnswer } from './tombstone.types.js';

export type TombstoneFormat = 'json' | 'problem';

export interface RenderedAnswer {
  readonly contentType: string;
  readonly body: Record<string, unknown>;
}

/** The default base of the problem type URIs: a tag URI (RFC 4151), never dereferenced. */
export const DEFAULT_PROBLEM_TYPE_BASE = 'tag:nestjs-tombstones,2026:';

/**
 * One problem type per kind of answer (RFC 9457 §3.1.1): the name appended to the base, and the
 * title, which summarises the type and so is the same for every status the type answers with.
 */
const PROBLEM_TYPES: Record<TombstoneAnswer['error'], { name: string; title: string }> = {
  not_found: { name: 'not-found', title: 'Not Found' },
  gone: { name: 'gone', title: 'Gone' },
  moved: { name: 'moved', title: 'Moved' },
};

/**
 * Turns an answer into a body. Subclass it and pass the class as the module's `renderer`
 * option to change wording or shape; the status and headers stay the module's.
 *
 * @example
 * class MyRenderer extends TombstoneRenderer {
 *   protected override message(answer: TombstoneAnswer) {
 *     return answer.error === 'gone' ? 'This page was retired.' : super.message(answer);
 *   }
 * }
 */
@Injectable()
export class TombstoneRenderer {
  /** Set by the module from its `problemTypeBase` option. @internal */
  problemTypeBase = DEFAULT_PROBLEM_TYPE_BASE;

  render(answer: TombstoneAnswer, format: TombstoneFormat): RenderedAnswer {
    const facts = this.facts(answer);
    if (format === 'json') {
      return {
        contentType: 'application/json; charset=utf-8',
        body: { error: answer.error, message: this.message(answer), ...facts },
      };
    }
    // RFC 9457: the members beyond the five standard ones are extensions of the answer's type.
    return {
      contentType: 'application/problem+json; charset=utf-8',
      body: {
        type: this.problemType(answer),
        title: PROBLEM_TYPES[answer.error].title,
        status: answer.status,
        detail: this.message(answer),
        instance: answer.path,
        error: answer.error,
        ...facts,
      },
    };
  }

  /**
   * The problem type URI of an answer: the module's `problemTypeBase` followed by `not-found`,
   * `gone` or `moved`. Override it to give your own types.
   */
  protected problemType(answer: TombstoneAnswer): string {
    return this.problemTypeBase + PROBLEM_TYPES[answer.error].name;
  }

  protected message(answer: TombstoneAnswer): string {
    const subject = `${answer.label} '${shorten(answer.id)}'`;
    switch (answer.error) {
      case 'gone':
        return `${subject} was permanently deleted`;
      case 'moved':
        return `${subject} has moved to ${answer.location}`;
      default:
        return `${subject} was not found`;
    }
  }

  /** The machine-readable members, in a stable order. Hidden keys get exactly a 404's. */
  protected facts(answer: TombstoneAnswer): Record<string, unknown> {
    const facts: Record<string, unknown> = { resource: answer.resource, id: answer.id };
    if (answer.error === 'gone') {
      facts.deletedAt = answer.deletedAt;
      facts.reason = answer.reason ?? null;
      facts.alternative = answer.alternative ?? null;
    } else if (answer.error === 'moved') {
      facts.location = answer.location;
      facts.movedTo = answer.targetId;
    } else if (answer.suggestions !== undefined && answer.suggestions.length > 0) {
      facts.suggestions = answer.suggestions.map(({ id, location }) => ({ id, location }));
    }
    facts.path = answer.path;
    facts.requestId = answer.requestId;
    return facts;
  }
}

function shorten(id: string): string {
  return id.length <= 200 ? id : `${id.slice(0, 200)}…`;
}
