import {
  Body,
  Controller,
  Delete,
  Get,
  HttpCode,
  Inject,
  Param,
  Patch,
  type PipeTransform,
  Post,
  Query,
  Req,
  UseGuards,
  UsePipes,
  ValidationPipe,
  type ValidationError,
} from '@nestjs/common';
import { ApiBody, ApiOkResponse, ApiOperation, ApiParam, ApiResponse, ApiTags } from '@nestjs/swagger';
import { LIMITS } from '../tombstone.constants.js';
import type { TombstoneRequest } from '../tombstone.options.js';
import { assertText } from '../tombstone.validation.js';
import {
  CreateTombstoneDto,
  ListTombstonesQuery,
  ResolveTombstonesDto,
  StaleTombstonesQuery,
  UpdateTombstoneDto,
} from './admin.dto.js';
import { TombstoneAdminAccessGuard } from './admin.guard.js';
import { TOMBSTONE_ADMIN_OPTIONS } from './admin.module-definition.js';
import type { ResolvedTombstoneAdminOptions } from './admin.options.js';
import {
  invalid,
  TombstoneAdminService,
  type TombstonePage,
  type TombstoneResolveResult,
  type TombstoneView,
} from './admin.service.js';

/** Every field's problem, flattened (`metadata.a`), in one 400. */
function validationFailure(errors: ValidationError[]) {
  const flat: { field: string; reason: string }[] = [];
  const walk = (list: ValidationError[], prefix: string) => {
    for (const error of list) {
      const field = prefix ? `${prefix}.${error.property}` : error.property;
      for (const reason of Object.values(error.constraints ?? {})) flat.push({ field, reason });
      walk(error.children ?? [], field);
    }
  };
  walk(errors, '');
  const first = flat[0] ?? { field: 'body', reason: 'must be a JSON object' };
  const exception = invalid(first.field, first.reason);
  const response = exception.getResponse() as { errors: unknown[] };
  response.errors = flat.length > 0 ? flat : [first];
  return exception;
}

const validation = new ValidationPipe({
  whitelist: true,
  forbidNonWhitelisted: true,
  transform: true,
  forbidUnknownValues: true,
  validationError: { target: false, value: false },
  exceptionFactory: validationFailure,
});

/** A tombstone id: a positive 64-bit integer. Anything else is the client's mistake. */
class TombstoneIdPipe implements PipeTransform<string, string> {
  transform(value: string): string {
    if (!/^[1-9][0-9]{0,18}$/.test(value) || BigInt(value) > 9_223_372_036_854_775_807n) {
      throw invalid('id', 'must be a tombstone id (a positive integer)');
    }
    return value;
  }
}

const ERRORS = {
  400: { status: 400, description: 'Invalid input: `errors` lists each field and why' },
  401: { status: 401, description: 'Not authenticated (your guard said so)' },
  403: { status: 403, description: 'Not allowed (your guard said so)' },
} as const;

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
@UsePipes(validation)
export class TombstoneAdminController {
  constructor(
    private readonly admin: TombstoneAdminService,
    @Inject(TOMBSTONE_ADMIN_OPTIONS) private readonly options: ResolvedTombstoneAdminOptions,
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
    return this.admin.create(dto, this.actorOf(request));
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
    return this.admin.update(id, dto, this.actorOf(request));
  }

  @Delete(':id')
  @HttpCode(204)
  @ApiOperation({ summary: 'Delete a tombstone: its key is restored' })
  @ApiParam({ name: 'id', type: String })
  @ApiResponse({ status: 204, description: 'Deleted' })
  @ApiResponse({ status: 404, description: 'No tombstone has this id' })
  remove(@Param('id', TombstoneIdPipe) id: string): Promise<void> {
    return this.admin.remove(id);
  }

  /** Who acts: the module's `actor` option, else the user your guard authenticated. */
  private actorOf(request: TombstoneRequest): string | null {
    const option = this.options.actor;
    let value: unknown;
    if (typeof option === 'function') value = option(request);
    else if (option) value = request.headers[option.header.toLowerCase()];
    else {
      const user = request.user as Record<string, unknown> | undefined;
      value = user?.id ?? user?.sub ?? user?.username ?? user?.email;
    }
    if (Array.isArray(value)) value = value[0];
    if (typeof value === 'number' || typeof value === 'bigint') value = String(value);
    if (typeof value !== 'string' || value === '') return null;
    try {
      return assertText(value, 'actor', LIMITS.actorLength);
    } catch {
      return null;
    }
  }
}
