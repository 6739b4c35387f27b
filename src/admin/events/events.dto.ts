import { ApiProperty, ApiPropertyOptional, PickType } from '@nestjs/swagger';
import { IsIn, IsOptional, Matches, ValidateBy, type ValidationOptions } from 'class-validator';
import { TOMBSTONE_EVENT_TYPES, type TombstoneEventType } from '../../events/events.types.js';
import { IsTombstoneKey, ListTombstonesQuery } from '../tombstones/tombstones.dto.js';
import { isSinkName, SINK_NAME_REASON } from '../admin.validation.js';

export const DELIVERY_STATES = ['pending', 'delivered', 'dead'] as const;
/** `pending`: not delivered yet (waiting, leased or backing off); `delivered`; `dead`: gave up. */
export type DeliveryState = (typeof DELIVERY_STATES)[number];

/** A sink name: 1 to 200 printable characters. */
const IsSinkName = (options?: ValidationOptions) =>
  ValidateBy({ name: 'isSinkName', validator: { validate: isSinkName, defaultMessage: () => `$property ${SINK_NAME_REASON}` } }, options);

const SINK = { description: 'A sink name, as the dispatcher registered it', example: 'webhook:search-index', maxLength: 200 };

/**
 * Filters and page of the events listing; every filter optional, all of them combined with AND.
 * `scope` and `type` are validated as the tombstone listing validates them, `key` as a key.
 */
export class ListTombstoneEventsQuery extends PickType(ListTombstonesQuery, ['scope', 'type', 'cursor', 'limit'] as const) {
  @ApiPropertyOptional({ description: 'The resource key, exactly' })
  @IsOptional()
  @IsTombstoneKey()
  key?: string;

  @ApiPropertyOptional({ enum: TOMBSTONE_EVENT_TYPES })
  @IsOptional()
  @IsIn([...TOMBSTONE_EVENT_TYPES])
  eventType?: TombstoneEventType;

  @ApiPropertyOptional({ ...SINK, description: 'Events with a delivery to this sink (in `state`, when given)' })
  @IsOptional()
  @IsSinkName()
  sink?: string;

  @ApiPropertyOptional({ enum: DELIVERY_STATES, description: 'Events with a delivery in this state (to `sink`, when given)' })
  @IsOptional()
  @IsIn([...DELIVERY_STATES])
  state?: DeliveryState;
}

/** The dead letters, oldest first, of every sink or of one. */
export class ListDeadLettersQuery extends PickType(ListTombstonesQuery, ['limit'] as const) {
  @ApiPropertyOptional({ ...SINK, description: 'Only this sink’s dead letters' })
  @IsOptional()
  @IsSinkName()
  sink?: string;

  // Longer than the other cursors: it carries a sink name.
  @ApiPropertyOptional({ description: 'nextCursor of the previous page' })
  @IsOptional()
  @Matches(/^[A-Za-z0-9_-]{1,1200}$/, { message: 'cursor must be the nextCursor of a previous page' })
  cursor?: string;
}

/** Which sink's dead letters to retry (required: a bulk write names its bound). */
export class RetryDeadLettersDto {
  @ApiProperty(SINK)
  @IsSinkName()
  sink!: string;
}

/** Which sink's dead letters to discard (required). */
export class DiscardDeadLettersQuery {
  @ApiProperty(SINK)
  @IsSinkName()
  sink!: string;
}
