import {
  Body,
  Controller,
  Delete,
  Get,
  HttpCode,
  Inject,
  Param,
  Patch,
  Post,
  Query,
  PayloadTooLargeException,
  Req,
  Res,
  StreamableFile,
  UnsupportedMediaTypeException,
  UseGuards,
  UsePipes,
} from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { ApiBody, ApiConsumes, ApiOkResponse, ApiOperation, ApiParam, ApiProduces, ApiResponse, ApiTags } from '@nestjs/swagger';
import {
  CreateTombstoneDto,
  ExportQuery,
  ImportQuery,
  ListTombstonesQuery,
  ResolveTombstonesDto,
  StaleTombstonesQuery,
  UpdateTombstoneDto,
} from './tombstones.dto.js';
import { actorOf } from '../admin.actor.js';
import { TombstoneAdminAccessGuard } from '../admin.guard.js';
import { TOMBSTONE_ADMIN_OPTIONS } from '../admin.module-definition.js';
import type { ResolvedTombstoneAdminOptions } from '../admin.options.js';
import { type ImportFormat, type TombstoneImportReport, TombstoneTransferService } from '../transfer/transfer.service.js';
import { TombstoneAdminWrites } from '../admin.settle.js';
import { ADMIN_ERROR_RESPONSES, adminValidationPipe, TombstoneIdPipe } from '../admin.validation.js';
import {
  TombstoneAdminService,
  type TombstonePage,
  type TombstoneResolveResult,
  type TombstoneView,
} from './tombstones.service.js';
import { type TombstoneRequest } from '../../tombstone.types.js';

function isReadable(value: unknown): boolean {
  return typeof (value as { pipe?: unknown } | null)?.pipe === 'function';
}

const ERRORS = ADMIN_ERROR_RESPONSES;

/**
 * The admin endpoints. Mount them under a prefix of your choice, e.g.
 * `RouterModule.register([{ path: 'admin', module: TombstoneAdminModule }])` serves
 * `/admin/tombstones`.
 */
@ApiTags('tombstones')
@ApiResponse(ERRORS[400])
@ApiResponse(ERRORS[401])
@ApiResponse(ERRORS[403])
@Controller('tombstones')
@UseGuards(TombstoneAdminAccessGuard)
@UsePipes(adminValidationPipe)
export class TombstoneAdminController {
  constructor(
    private readonly admin: TombstoneAdminService,
    private readonly transfer: TombstoneTransferService,
    @Inject(TOMBSTONE_ADMIN_OPTIONS) private readonly options: ResolvedTombstoneAdminOptions,
    private readonly writes: TombstoneAdminWrites,
    private readonly adapterHost: HttpAdapterHost,
  ) {}

  @Get()
  @ApiOperation({ summary: 'List tombstones, newest first, with filters and a cursor' })
  @ApiOkResponse({ description: '{ items, nextCursor }' })
  list(@Query() query: ListTombstonesQuery): Promise<TombstonePage> {
    return this.admin.list(query);
  }

  @Get('stale')
  @ApiOperation({ summary: 'Tombstones no lookup answered from in `days` days: candidates for removal' })
  @ApiOkResponse({ description: '{ items, nextCursor }' })
  stale(@Query() query: StaleTombstonesQuery): Promise<TombstonePage> {
    return this.admin.stale(query);
  }

  @Post('resolve')
  @HttpCode(200)
  @ApiOperation({ summary: 'What a lookup answers now for each key: status, final target, deletedAt' })
  @ApiBody({ type: ResolveTombstonesDto })
  @ApiOkResponse({ description: '{ results: [{ key, state, status, target?, merged?, deletedAt?, reason?, alternative? }] }' })
  resolve(@Body() dto: ResolveTombstonesDto): Promise<{ results: TombstoneResolveResult[] }> {
    return this.admin.resolve(dto);
  }

  @Post('import')
  @HttpCode(200)
  @ApiOperation({
    summary: 'Import tombstones (upsert), all or nothing; ?dryRun=true checks every row and writes nothing',
    description:
      'CSV with a header row, or NDJSON, streamed (limits: maxImportRows, maxImportBytes); or a JSON array ' +
      "(within the app's own JSON body limit). Columns: scope, type, key, kind, target, permanent, reason, " +
      'alternative, expiresAt; the read-only columns of an export are accepted and ignored.',
  })
  @ApiConsumes('text/csv', 'application/x-ndjson', 'application/json')
  @ApiOkResponse({ description: '{ dryRun, rows, created, updated, errorCount, errors: [{ row, field, reason }] }' })
  @ApiResponse({ status: 413, description: 'More rows or bytes than the module allows' })
  @ApiResponse({ status: 415, description: 'Not CSV, NDJSON or JSON' })
  async import(
    @Query() query: ImportQuery,
    @Req() request: TombstoneRequest & { body?: unknown; raw?: unknown },
    @Res({ passthrough: true }) response: unknown,
  ): Promise<TombstoneImportReport> {
    const type = String(request.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    const format: ImportFormat | undefined =
      type === 'text/csv' ? 'csv' : type === 'application/x-ndjson' ? 'ndjson' : type === 'application/json' ? 'json' : undefined;
    if (!format) {
      throw new UnsupportedMediaTypeException('Send text/csv, application/x-ndjson or application/json.');
    }
    // CSV and NDJSON come as the request stream (Express leaves them unparsed; on Fastify the
    // module's pass-through parser hands over the payload); JSON as the app's parsed body.
    const body = format === 'json' ? request.body : isReadable(request.body) ? request.body : (request.raw ?? request);
    const dryRun = query.dryRun === 'true';
    try {
      const report = this.transfer.import(body, format, dryRun, this.actorOf(request));
      return await (dryRun ? report : this.writes.settled(report));
    } catch (error) {
      // Refused before the body was read to its end: the rest of it is still on the connection,
      // which cannot carry another request. It is closed after this answer.
      if (error instanceof PayloadTooLargeException) this.adapterHost.httpAdapter.setHeader(response, 'Connection', 'close');
      throw error;
    }
  }

  @Get('export')
  @ApiOperation({ summary: 'Export tombstones as CSV, NDJSON or JSON, streamed in id order' })
  @ApiProduces('text/csv', 'application/x-ndjson', 'application/json')
  export(@Query() query: ExportQuery): StreamableFile {
    const format = query.format ?? 'csv';
    const types = { csv: 'text/csv; charset=utf-8', ndjson: 'application/x-ndjson', json: 'application/json; charset=utf-8' };
    return new StreamableFile(this.transfer.export(format, { scope: query.scope, type: query.type, kind: query.kind }), {
      type: types[format],
      disposition: `attachment; filename="tombstones.${format}"`,
    });
  }

  @Get(':id')
  @ApiOperation({ summary: 'Read one tombstone' })
  @ApiParam({ name: 'id', type: String })
  @ApiResponse({ status: 404, description: 'No tombstone has this id' })
  get(@Param('id', TombstoneIdPipe) id: string): Promise<TombstoneView> {
    return this.admin.get(id);
  }

  @Post()
  @ApiOperation({ summary: 'Create a tombstone (a redirect is collapsed onto its target’s destination)' })
  @ApiBody({ type: CreateTombstoneDto })
  @ApiResponse({ status: 201, description: 'The tombstone' })
  @ApiResponse({ status: 409, description: 'The key already has a tombstone, or the redirect would form a cycle' })
  create(@Body() dto: CreateTombstoneDto, @Req() request: TombstoneRequest): Promise<TombstoneView> {
    return this.writes.settled(this.admin.create(dto, this.actorOf(request)));
  }

  @Patch(':id')
  @ApiOperation({ summary: 'Change a tombstone (its scope, type and key stay)' })
  @ApiParam({ name: 'id', type: String })
  @ApiBody({ type: UpdateTombstoneDto })
  @ApiResponse({ status: 404, description: 'No tombstone has this id' })
  @ApiResponse({ status: 409, description: 'The redirect would form a cycle' })
  update(
    @Param('id', TombstoneIdPipe) id: string,
    @Body() dto: UpdateTombstoneDto,
    @Req() request: TombstoneRequest,
  ): Promise<TombstoneView> {
    return this.writes.settled(this.admin.update(id, dto, this.actorOf(request)));
  }

  @Delete(':id')
  @HttpCode(204)
  @ApiOperation({ summary: 'Delete a tombstone: its key is restored' })
  @ApiParam({ name: 'id', type: String })
  @ApiResponse({ status: 204, description: 'Deleted' })
  @ApiResponse({ status: 404, description: 'No tombstone has this id' })
  remove(@Param('id', TombstoneIdPipe) id: string): Promise<void> {
    return this.writes.settled(this.admin.remove(id));
  }

  private actorOf(request: TombstoneRequest): string | null {
    return actorOf(this.options, request);
  }
}
