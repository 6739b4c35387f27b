import { Injectable } from '@nestjs/common';
import { type TombstoneAnswer } from './tombstone.types.js';

export type TombstoneFormat = 'json' | 'problem';

export interface RenderedAnswer {
  readonly contentType: string;
  readonly body: Record<string, unknown>;
}

const TITLES: Record<TombstoneAnswer['status'], string> = {
  301: 'Moved Permanently',
  302: 'Found',
  307: 'Temporary Redirect',
  308: 'Permanent Redirect',
  404: 'Not Found',
  410: 'Gone',
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
  render(answer: TombstoneAnswer, format: TombstoneFormat): RenderedAnswer {
    const facts = this.facts(answer);
    if (format === 'json') {
      return {
        contentType: 'application/json; charset=utf-8',
        body: { error: answer.error, message: this.message(answer), ...facts },
      };
    }
    // RFC 9457: with type about:blank the title is the status phrase; the facts are extensions.
    return {
      contentType: 'application/problem+json; charset=utf-8',
      body: {
        type: 'about:blank',
        title: TITLES[answer.status],
        status: answer.status,
        detail: this.message(answer),
        instance: answer.path,
        error: answer.error,
        ...facts,
      },
    };
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
    }
    facts.path = answer.path;
    facts.requestId = answer.requestId;
    return facts;
  }
}

function shorten(id: string): string {
  return id.length <= 200 ? id : `${id.slice(0, 200)}…`;
}
