import { Body, Controller, Delete, Get, HttpCode, Inject, Param, Post, Query, Req, UseGuards, UsePipes } from '@nestjs/common';
import { ApiBody, ApiOkResponse, ApiOperation, ApiParam, ApiResponse, ApiTags } from '@nestjs/swagger';
import { ListTombstoneMissesQuery, PurgeTombstoneMissesQuery, ResolveTombstoneMissDto } from './misses.dto.js';
import { type TombstoneMissPage, TombstoneMissesAdminService, type TombstoneMissView } from './misses.service.js';
import { actorOf } from '../admin.actor.js';
import { TombstoneAdminAccessGuard } from '../admin.guard.js';
import { TOMBSTONE_ADMIN_OPTIONS } from '../admin.module-definition.js';
import type { ResolvedTombstoneAdminOptions } from '../admin.options.js';
import type { TombstoneView } from '../tombstones/tombstones.service.js';
import { TombstoneAdminWrites } from '../admin.settle.js';
import { ADMIN_ERROR_RESPONSES, adminValidationPipe, TombstoneMissIdPipe } from '../admin.validation.js';
import { type TombstoneRequest } from '../../tombstone.types.js';

/**
 * The misses log (`tombstone_misses`, written when `TombstoneModule`'s `missLog` is on): the
 * 404s no tombstone explained, to list, read, turn into a tombstone, delete or purge. Served by
 * `TombstoneAdminModule`, behind the same guard, next to `/tombstones`.
 */
@ApiTags('tombstone-misses')
@ApiResponse(ADMIN_ERROR_RESPONSES[400])
@ApiResponse(ADMIN_ERROR_RESPONSES[401])
@ApiResponse(ADMIN_ERROR_RESPONSES[403])
@Controller('tombstone-misses')
@UseGuards(TombstoneAdminAccessGuard)
@UsePipes(adminValidationPipe)
export class TombstoneMissesAdminController {
  constructor(
    private readonly misses: TombstoneMissesAdminService,
    @Inject(TOMBSTONE_ADMIN_OPTIONS) private readonly options: ResolvedTombstoneAdminOptions,
    private readonly writes: TombstoneAdminWrites,
  ) {}

  @Get()
  @ApiOperation({ summary: 'List misses, last seen first (sort=recent) or most missed first (sort=hits), with filters and a cursor' })
  @ApiOkResponse({ description: '{ items: [{ id, scope, type, key, hits, firstSeen, lastSeen, lastReferrer }], nextCursor }' })
  list(@Query() query: ListTombstoneMissesQuery): Promise<TombstoneMissPage> {
    return this.misses.list(query);
  }

  @Get(':id')
  @ApiOperation({ summary: 'Read one miss' })
  @ApiParam({ name: 'id', type: String })
  @ApiOkResponse({ description: '{ id, scope, type, key, hits, firstSeen, lastSeen, lastReferrer }' })
  @ApiResponse({ status: 404, description: 'No miss has this id' })
  get(@Param('id', TombstoneMissIdPipe) id: string): Promise<TombstoneMissView> {
    return this.misses.get(id);
  }

  @Get(':id/suggestions')
  @ApiOperation({ summary: 'Live keys like the missed one, most alike first (up to 3): targets to redirect the miss to' })
  @ApiParam({ name: 'id', type: String })
  @ApiOkResponse({ description: '{ keys }: keys of the type in the miss’s scope, from its tracked table and its live redirects’ targets (see “did you mean” suggestions)' })
  @ApiResponse({ status: 404, description: 'No miss has this id' })
  suggestions(@Param('id', TombstoneMissIdPipe) id: string): Promise<{ keys: readonly string[] }> {
    return this.misses.suggestions(id);
  }

  @Post(':id/resolve')
  @ApiOperation({ summary: 'Create the tombstone of this miss’s key (e.g. a move to the right key), and delete the miss' })
  @ApiParam({ name: 'id', type: String })
  @ApiBody({ type: ResolveTombstoneMissDto })
  @ApiResponse({ status: 201, description: 'The tombstone, as GET /tombstones/{id} shows it' })
  @ApiResponse({ status: 404, description: 'No miss has this id' })
  @ApiResponse({ status: 409, description: 'The key already has a tombstone (the body names its id), or the redirect would form a cycle' })
  resolve(
    @Param('id', TombstoneMissIdPipe) id: string,
    @Body() dto: ResolveTombstoneMissDto,
    @Req() request: TombstoneRequest,
  ): Promise<TombstoneView> {
    return this.writes.settled(this.misses.resolve(id, dto, actorOf(this.options, request)));
  }

  @Delete(':id')
  @HttpCode(204)
  @ApiOperation({ summary: 'Delete a miss (it is logged again at its next 404)' })
  @ApiParam({ name: 'id', type: String })
  @ApiResponse({ status: 204, description: 'Deleted' })
  @ApiResponse({ status: 404, description: 'No miss has this id' })
  remove(@Param('id', TombstoneMissIdPipe) id: string): Promise<void> {
    return this.misses.remove(id);
  }

  @Delete()
  @HttpCode(200)
  @ApiOperation({ summary: 'Purge the misses last seen before `before` (required)' })
  @ApiOkResponse({ description: '{ deleted }: how many misses were deleted' })
  purge(@Query() query: PurgeTombstoneMissesQuery): Promise<{ deleted: number }> {
    return this.misses.purge(query.before);
  }
}
