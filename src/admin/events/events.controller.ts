import { Body, Controller, Delete, Get, HttpCode, Inject, Param, Post, Query, Req, UseGuards, UsePipes } from '@nestjs/common';
import { ApiBody, ApiOkResponse, ApiOperation, ApiParam, ApiResponse, ApiTags } from '@nestjs/swagger';
import { DiscardDeadLettersQuery, ListDeadLettersQuery, ListTombstoneEventsQuery, RetryDeadLettersDto } from './events.dto.js';
import { TombstoneEventsAdminService } from './events.service.js';
import type {
  TombstoneDeadLetterPage,
  TombstoneDeliveryView,
  TombstoneEventPage,
  TombstoneEventView,
  TombstoneSinkView,
} from './events.views.js';
import { actorOf } from '../admin.actor.js';
import { TombstoneAdminAccessGuard } from '../admin.guard.js';
import { TOMBSTONE_ADMIN_OPTIONS } from '../admin.module-definition.js';
import type { ResolvedTombstoneAdminOptions } from '../admin.options.js';
import { ADMIN_ERROR_RESPONSES, adminValidationPipe, TombstoneEventIdPipe, TombstoneSinkNamePipe } from '../admin.validation.js';
import { type TombstoneRequest } from '../../tombstone.types.js';

const EVENT = '{ id, sequence, type, scope, resourceType, key, before, after, actor, reason, occurredAt, deliveries }';
const DELIVERY = '{ sink, state, attempts, nextAttemptAt, lastError, finishedAt }';
const ID = { name: 'id', type: String, format: 'uuid', description: 'The event’s id (a UUID)' };
const SINK = { name: 'sink', type: String, description: 'A sink name (URL-encoded)' };
const NO_DELIVERY = { status: 404, description: 'No event has this id, or it has no delivery to this sink' };

/**
 * The events outbox (`tombstone_events` and their per-sink deliveries): events and where they
 * went, dead letters to retry or discard, the registered sinks. Served by
 * `TombstoneAdminModule`, behind the same guard, next to `/tombstones`. Reads and writes the
 * tables only: the events dispatcher need not run in this app.
 */
@ApiTags('tombstone-events')
@ApiResponse(ADMIN_ERROR_RESPONSES[400])
@ApiResponse(ADMIN_ERROR_RESPONSES[401])
@ApiResponse(ADMIN_ERROR_RESPONSES[403])
@Controller('events')
@UseGuards(TombstoneAdminAccessGuard)
@UsePipes(adminValidationPipe)
export class TombstoneEventsAdminController {
  constructor(
    private readonly events: TombstoneEventsAdminService,
    @Inject(TOMBSTONE_ADMIN_OPTIONS) private readonly options: ResolvedTombstoneAdminOptions,
  ) {}

  @Get()
  @ApiOperation({ summary: 'List events, newest first, with their deliveries; filters and a cursor' })
  @ApiOkResponse({ description: `{ items: [${EVENT}], nextCursor }` })
  list(@Query() query: ListTombstoneEventsQuery): Promise<TombstoneEventPage> {
    return this.events.list(query);
  }

  // Before ':id', which would take these names for ids.
  @Get('dead-letters')
  @ApiOperation({ summary: 'Dead deliveries with their events, oldest first (by when they were given up), with a cursor' })
  @ApiOkResponse({ description: `{ items: [{ sink, state, attempts, nextAttemptAt, lastError, finishedAt, event }], nextCursor }` })
  deadLetters(@Query() query: ListDeadLettersQuery): Promise<TombstoneDeadLetterPage> {
    return this.events.deadLetters(query);
  }

  @Post('dead-letters/retry')
  @HttpCode(200)
  @ApiOperation({ summary: 'Every dead delivery of `sink` back to pending, due now' })
  @ApiBody({ type: RetryDeadLettersDto })
  @ApiOkResponse({ description: '{ retried }: how many deliveries are pending again' })
  retryDead(@Body() dto: RetryDeadLettersDto, @Req() request: TombstoneRequest): Promise<{ retried: number }> {
    return this.events.retryDead(dto.sink, actorOf(this.options, request));
  }

  @Delete('dead-letters')
  @HttpCode(200)
  @ApiOperation({ summary: 'Discard every dead delivery of `sink` (required)' })
  @ApiOkResponse({ description: '{ discarded }: how many deliveries were deleted' })
  discardDead(@Query() query: DiscardDeadLettersQuery, @Req() request: TombstoneRequest): Promise<{ discarded: number }> {
    return this.events.discardDead(query.sink, actorOf(this.options, request));
  }

  @Get('sinks')
  @ApiOperation({ summary: 'Registered sinks: pending and dead deliveries, lag, registered and last seen' })
  @ApiOkResponse({ description: '{ items: [{ name, registeredAt, seenAt, pending, dead, lagMs }] }' })
  sinks(): Promise<{ items: TombstoneSinkView[] }> {
    return this.events.sinks();
  }

  @Delete('sinks/:name')
  @HttpCode(204)
  @ApiOperation({ summary: 'Unregister a sink: no more events are written for it, and its deliveries are dropped' })
  @ApiParam({ ...SINK, name: 'name' })
  @ApiResponse({ status: 204, description: 'Unregistered' })
  @ApiResponse({ status: 404, description: 'No sink is registered under this name' })
  unregister(@Param('name', new TombstoneSinkNamePipe('name')) name: string, @Req() request: TombstoneRequest): Promise<void> {
    return this.events.unregister(name, actorOf(this.options, request));
  }

  @Get(':id')
  @ApiOperation({ summary: 'Read one event, with its deliveries' })
  @ApiParam(ID)
  @ApiOkResponse({ description: EVENT })
  @ApiResponse({ status: 404, description: 'No event has this id' })
  get(@Param('id', TombstoneEventIdPipe) id: string): Promise<TombstoneEventView> {
    return this.events.get(id);
  }

  @Post(':id/deliveries/:sink/retry')
  @HttpCode(200)
  @ApiOperation({
    summary: 'A delivery back to pending, due now, attempts from zero',
    description: 'Dead, pending or delivered: a delivered event is sent again on purpose. last_error is kept.',
  })
  @ApiParam(ID)
  @ApiParam(SINK)
  @ApiOkResponse({ description: DELIVERY })
  @ApiResponse(NO_DELIVERY)
  retry(
    @Param('id', TombstoneEventIdPipe) id: string,
    @Param('sink', TombstoneSinkNamePipe) sink: string,
    @Req() request: TombstoneRequest,
  ): Promise<TombstoneDeliveryView> {
    return this.events.retry(id, sink, actorOf(this.options, request));
  }

  @Delete(':id/deliveries/:sink')
  @HttpCode(204)
  @ApiOperation({ summary: 'Discard a delivery: the event is not delivered to this sink' })
  @ApiParam(ID)
  @ApiParam(SINK)
  @ApiResponse({ status: 204, description: 'Discarded' })
  @ApiResponse(NO_DELIVERY)
  discard(
    @Param('id', TombstoneEventIdPipe) id: string,
    @Param('sink', TombstoneSinkNamePipe) sink: string,
    @Req() request: TombstoneRequest,
  ): Promise<void> {
    return this.events.discard(id, sink, actorOf(this.options, request));
  }
}
