// The small Nest app that `npm run bench` (bench/run.js) drives, started by it as a child process
// so that the app under load never shares an event loop with the load generator or the other apps.
//
//   BENCH_MODE=module       @Tombstoned routes, TombstoneModule and its admin endpoints
//   BENCH_MODE=plain        the same handler, no module: a miss is a plain NotFoundException
//   BENCH_MODE=handwritten  the same route, no module: a handler that already knows the module's
//                           answers (captured from the module app by the parent and sent here
//                           over IPC) and writes them itself, with a fresh request id each time
//
// All three have the same TypeORM DataSource, whose logger counts the queries it runs, listen on
// 127.0.0.1 on a free port and report it over IPC. The parent asks for the counts of requests,
// queries and CPU time over IPC too, and has the module app write tombstones (P6), so the apps
// serve no route of the benchmark's own. The module app reports ready only once its lookup cache
// listens for changes and its membership filter has loaded: the measured runs never see the
// start-up path (every miss a query) nor the filter's load queries.
// HTTP_ADAPTER=fastify runs them on Fastify instead of Express. Plain JavaScript: decorators are
// applied by calling them, as TypeScript's output does.
import 'reflect-metadata';
import { randomUUID, timingSafeEqual } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { setTimeout as sleep } from 'node:timers/promises';
import { Controller, Get, Module, NotFoundException, Param, Res, UnauthorizedException } from '@nestjs/common';
import { NestFactory, RouterModule } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import {
  TOMBSTONE_ENTITIES,
  TOMBSTONE_MIGRATIONS,
  Tombstoned,
  TombstoneModule,
  TombstoneService,
} from '../dist/src/index.js';
// Internals the benchmark reads (the cache's stats, flushing hit counts): not public API.
import { TombstoneLookup } from '../dist/src/cache/tombstone.lookup.js';
import { TombstoneHitCounter } from '../dist/src/counters/tombstone.hits.js';
import { TombstoneAdminModule } from '../dist/src/admin/index.js';
import { TombstoneEventsModule } from '../dist/src/events/index.js';

const mode = process.env.BENCH_MODE;
if (!['module', 'plain', 'handwritten'].includes(mode)) throw new Error('BENCH_MODE must be module, plain or handwritten');
const adapterName = process.env.HTTP_ADAPTER === 'fastify' ? 'fastify' : 'express';

/** Live resources are in memory, as in the test fixtures: the handler's own lookup costs nothing. */
const LIVE = new Map([['live', { key: 'live', name: 'A live item' }]]);
for (let i = 0; i < 1000; i++) LIVE.set(`live-${i}`, { key: `live-${i}`, name: `Live item ${i}` });

/**
 * The handler of the module and plain apps. The module app's returns `null` for a missing item,
 * as the README teaches (`findOneBy()` gives `null`); the plain app's throws the
 * NotFoundException that plain Nest needs for a 404. The found path is the same code in both.
 */
class ItemsController {
  findOne(key) {
    const item = LIVE.get(key);
    if (item) return item;
    if (mode === 'module') return null;
    throw new NotFoundException(`no item ${key}`);
  }
}
Param('key')(ItemsController.prototype, 'findOne', 0);
Get(':key')(ItemsController.prototype, 'findOne', Object.getOwnPropertyDescriptor(ItemsController.prototype, 'findOne'));
Controller('items')(ItemsController);
// The only difference between the module app's routes and the plain app's.
if (mode === 'module') Tombstoned('item', { param: 'key' })(ItemsController);

/** The same items with "did you mean" on for browsers (P3 with suggestions): a handler of its own, for a wrapper of its own. */
class SuggestItemsController {
  findOne(key) {
    const item = LIVE.get(key);
    if (item) return item;
    if (mode === 'module') return null;
    throw new NotFoundException(`no item ${key}`);
  }
}
Param('key')(SuggestItemsController.prototype, 'findOne', 0);
Get(':key')(SuggestItemsController.prototype, 'findOne', Object.getOwnPropertyDescriptor(SuggestItemsController.prototype, 'findOne'));
Controller('suggest/items')(SuggestItemsController);
if (mode === 'module') Tombstoned('item', { param: 'key', suggest: true })(SuggestItemsController);

/**
 * The hand-written app's answers, as the parent captured them from the module app: by key, and a
 * template for any other key. Each is { status, headers: [[name, parts]], body: parts }, where
 * `parts` are strings and slots, 0 for the request id and 1 for the key (the template's only).
 */
const ANSWERS = new Map();
let notFound;
/** Keys that read the same in a path, in JSON and in a header: the template's, as the bench sends them. */
const PLAIN_KEY = /^[A-Za-z0-9_-]{1,200}$/;
const fill = (parts, requestId, key) => {
  if (parts.length === 1 && typeof parts[0] === 'string') return parts[0];
  let text = '';
  for (const part of parts) text += part === 0 ? requestId : part === 1 ? key : part;
  return text;
};
let httpAdapter;

/**
 * What a user who already knew the module's answers would write: look the key up, then the
 * status, the headers in the module's order and the body, with a fresh request id spliced in
 * where the module puts one, written as the module's writer writes (Express: `res.setHeader()`,
 * then `res.end()` with the body's length, so no ETag; Fastify: `reply.header()`, `reply.send()`).
 */
class HandWrittenItemsController {
  findOne(key, response) {
    const item = LIVE.get(key);
    if (item) return void httpAdapter.reply(response, item, 200);
    const answer = ANSWERS.get(key) ?? (PLAIN_KEY.test(key) ? notFound : undefined);
    if (!answer) throw new NotFoundException(`no item ${key}`);
    const requestId = randomUUID();
    for (const [name, value] of answer.headers) httpAdapter.setHeader(response, name, fill(value, requestId, key));
    const body = fill(answer.body, requestId, key);
    if (adapterName === 'fastify') return void httpAdapter.reply(response, body, answer.status);
    response.statusCode = answer.status;
    response.setHeader('Content-Length', Buffer.byteLength(body));
    response.end(body);
  }
}
Param('key')(HandWrittenItemsController.prototype, 'findOne', 0);
Res()(HandWrittenItemsController.prototype, 'findOne', 1);
Get(':key')(HandWrittenItemsController.prototype, 'findOne', Object.getOwnPropertyDescriptor(HandWrittenItemsController.prototype, 'findOne'));
Controller('items')(HandWrittenItemsController);

/** Counts every statement the module app's DataSource runs (a TypeORM logger gets them all). */
class QueryCounter {
  total = 0;
  /** Lookups of keys (`FROM tombstones t`, one key or many): what a miss the cache cannot answer costs. */
  lookups = 0;
  /** The membership filter's loads: batches of keys read in order (`ORDER BY id` / `resource_key`). */
  loads = 0;
  logQuery(query) {
    this.total++;
    if (!/^\s*(SELECT|WITH)\b/i.test(query) || !/\btombstones\b/.test(query)) return;
    if (/\bORDER BY (id|resource_key) LIMIT\b/.test(query)) this.loads++;
    else if (/\btombstones t\b/.test(query)) this.lookups++;
  }
  logQueryError() {}
  logQuerySlow() {}
  logSchemaBuild() {}
  logMigration() {}
  log() {}
}
const counter = new QueryCounter();

/** The admin endpoints behind a bearer token that only the parent knows. */
const adminToken = Buffer.from(`Bearer ${process.env.BENCH_ADMIN_TOKEN ?? ''}`);
const adminGuard = {
  canActivate(context) {
    const request = context.switchToHttp().getRequest();
    const given = Buffer.from(request.headers.authorization ?? '');
    if (adminToken.length <= 8 || given.length !== adminToken.length || !timingSafeEqual(given, adminToken)) {
      throw new UnauthorizedException();
    }
    request.user = { id: 'bench' };
    return true;
  },
};

/** The same DataSource in every app; only the module app's has any work. */
const dataSource = () =>
  TypeOrmModule.forRoot({
    type: 'postgres',
    url: process.env.DATABASE_URL,
    entities: [...TOMBSTONE_ENTITIES],
    migrations: [...TOMBSTONE_MIGRATIONS],
    migrationsRun: false, // the parent ran them
    synchronize: false,
    logger: counter,
  });

class AppModule {}
Module({
  controllers: mode === 'handwritten' ? [HandWrittenItemsController] : [ItemsController, SuggestItemsController],
  imports:
    mode === 'module'
      ? [
          dataSource(),
          // Every default, as an app that just adds the module gets it (hit counts included); for
          // P7, cache tags on the answers, which the purges name.
          TombstoneModule.forRoot({ isGlobal: true, ...(process.env.BENCH_PURGE_URL ? { cacheTags: true } : {}) }),
          TombstoneAdminModule.forRoot({ guard: adminGuard, maxImportRows: 1_000_000, maxImportBytes: 256 * 1024 * 1024 }),
          RouterModule.register([{ path: 'admin', module: TombstoneAdminModule }]),
          // P7: the outbox purges the tags of every change at a generic purge endpoint (the parent's).
          ...(process.env.BENCH_PURGE_URL
            ? [TombstoneEventsModule.forRoot({ purge: [{ provider: 'http', url: process.env.BENCH_PURGE_URL }], listeners: false, eventEmitter: false })]
            : []),
        ]
      : [dataSource()],
})(AppModule);

async function createApp() {
  if (adapterName === 'fastify') {
    const { FastifyAdapter } = await import('@nestjs/platform-fastify');
    return NestFactory.create(AppModule, new FastifyAdapter(), { logger: ['error'] });
  }
  return NestFactory.create(AppModule, { logger: ['error'] });
}

const app = await createApp();
await app.listen(0, '127.0.0.1');
const server = app.getHttpServer();
const { port } = server.address();
httpAdapter = app.getHttpAdapter();
// Requests the server received, answered or not: autocannon's count leaves out those still in
// flight when a run ends, whose queries the counter saw.
let requests = 0;
server.on('request', () => requests++);

const lookup = mode === 'module' ? app.get(TombstoneLookup) : null;
/**
 * When this instance last heard of a change of each key (hrtime, ns), for P6: the module's
 * notification listener hands every change to `lookup.invalidate()`, which is watched here,
 * not altered. The most recent 10,000 keys.
 */
const heard = new Map();
if (lookup) {
  const invalidate = lookup.invalidate.bind(lookup);
  lookup.invalidate = (change) => {
    const at = process.hrtime.bigint();
    for (const key of [...(change.listed ?? []), ...(change.unlisted ?? [])]) {
      heard.delete(key);
      heard.set(key, at);
      if (heard.size > 10_000) heard.delete(heard.keys().next().value);
    }
    return invalidate(change);
  };
  // Listening starts during bootstrap (and is retried in the background if it failed); the
  // filter's load starts with it.
  for (let waited = 0; lookup.stats().state === 'waiting' && waited < 15_000; waited += 50) await sleep(50);
  await lookup.loaded();
}

/** The writes P6 times: they resolve when the change has committed (the service's own transaction). */
async function write({ op, key, to, reason }) {
  const tombstones = app.get(TombstoneService);
  const type = 'item';
  if (op === 'delete') await tombstones.recordDeletion(type, key, { reason: reason ?? null });
  else if (op === 'restore') await tombstones.restore(type, key);
  else if (op === 'move') await tombstones.recordMove(type, key, to);
  else throw new Error(`unknown write ${op}`);
}

/**
 * Resolves once no request has arrived for 20 ms (at most 1 s): the end of a measured window.
 * autocannon closes its connections when its run ends, but requests it had sent may still be
 * arriving and being answered; their CPU time belongs to the window that counts them.
 */
async function settled() {
  for (let waited = 0, last = -1; last !== requests && waited < 1000; waited += 20) {
    last = requests;
    await sleep(20);
  }
}

const cpuMicros = () => {
  const { user, system } = process.cpuUsage();
  return user + system;
};

/** A CPU profile of one window (`BENCH_PROFILE`), through the inspector. */
let profiler;
const inspect = (method, params) =>
  new Promise((resolve, reject) => profiler.post(method, params, (error, result) => (error ? reject(error) : resolve(result))));

process.on('message', async (message) => {
  if (message === 'queries') {
    await settled();
    process.send({ queries: { requests, total: counter.total, lookups: counter.lookups, loads: counter.loads, cpuMicros: cpuMicros() } });
  }
  // The hand-written app's answers, from the parent.
  if (message?.answers) {
    for (const [key, answer] of message.answers.byKey) ANSWERS.set(key, answer);
    notFound = message.answers.notFound;
    process.send({ loaded: ANSWERS.size });
  }
  if (message?.profile === 'start') {
    profiler = new Session();
    profiler.connect();
    await inspect('Profiler.enable');
    await inspect('Profiler.setSamplingInterval', { interval: message.intervalMicros });
    await inspect('Profiler.start');
    process.send({ profiling: { requests, cpuMicros: cpuMicros() } });
  }
  if (message?.profile === 'stop') {
    await settled();
    // Read before the profiler hands its profile over, which takes time of its own.
    const used = cpuMicros();
    const { profile } = await inspect('Profiler.stop');
    profiler.disconnect();
    writeFileSync(message.file, JSON.stringify(profile));
    process.send({ profiling: { requests, cpuMicros: used } });
  }
  if (message === 'stats') process.send({ stats: lookup?.stats() ?? null });
  if (message?.heard !== undefined) process.send({ heardAt: heard.has(message.heard) ? String(heard.get(message.heard)) : null });
  // Hit counts still waiting from earlier requests are written now, not in the next measured run.
  if (message === 'flush') {
    if (mode === 'module') await app.get(TombstoneHitCounter).flush();
    process.send({ flushed: true });
  }
  if (message?.write) {
    const start = process.hrtime.bigint();
    try {
      await write(message.write);
      // process.hrtime is CLOCK_MONOTONIC, the same clock in every process of the machine: the
      // parent measures from this instant, not from when this message reaches it.
      const resolvedAt = process.hrtime.bigint();
      process.send({ written: { resolvedAt: String(resolvedAt), ms: Number(resolvedAt - start) / 1e6 } });
    } catch (error) {
      process.send({ written: { error: error?.message ?? String(error) } });
    }
  }
  if (message?.writeMany) {
    const written = await Promise.all(
      message.writeMany.map(async (change) => {
        try {
          await write(change);
          return { resolvedAt: String(process.hrtime.bigint()) };
        } catch (error) {
          return { error: error?.message ?? String(error) };
        }
      }),
    );
    process.send({ writtenMany: written });
  }
  if (message === 'stop') {
    await app.close();
    process.exit(0);
  }
});
// For `npm run soak` (bench/soak.js), which samples one module app under sustained load. A second
// listener, so the commands above stay as they are:
//   'memory'            → { memory }: process.memoryUsage() (bytes), after a full GC when the
//                         app was started with --expose-gc (`gc` says whether it ran)
//   'pool'              → { pool }: the DataSource's pg pool: its max size, its clients, the idle
//                         ones and the callers waiting for one (module app; null for the others)
//   'cacheSettings'     → { cacheSettings }: the lookup cache's bounds as the module resolved them
//   { record: change }  → { recorded }: one write through TombstoneService, as `write` above plus
//                         `hide` (recordHidden) and `merge` ({ keys, to }: recordMerge)
//   'changes'           → { changes }: the changes handed to `lookup.invalidate()` so far (its own
//                         writes' and the notifications'), by what they name: keys (and how
//                         many), a whole (scope, type), or everything
const changes = { keyed: 0, keys: 0, pairs: 0, everything: 0 };
if (lookup) {
  const invalidate = lookup.invalidate.bind(lookup);
  lookup.invalidate = (change) => {
    if (!('scope' in change)) changes.everything++;
    else if ('all' in change) changes.pairs++;
    else {
      changes.keyed++;
      changes.keys += (change.listed?.length ?? 0) + (change.unlisted?.length ?? 0);
    }
    return invalidate(change);
  };
}
process.on('message', async (message) => {
  if (message === 'changes') process.send({ changes });
  if (message === 'memory') {
    const gc = typeof globalThis.gc === 'function';
    if (gc) globalThis.gc();
    process.send({ memory: { ...process.memoryUsage(), gc } });
  }
  if (message === 'pool') {
    const pool = mode === 'module' ? app.get(TombstoneService).dataSource.driver.master : null;
    process.send({
      pool: pool && { max: pool.options?.max ?? 10, total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount },
    });
  }
  if (message === 'cacheSettings') {
    // TypeScript's `private`, readable at run time: the bounds only (never `listen`, which may hold a password).
    const settings = lookup?.settings;
    process.send({
      cacheSettings: settings ? { maxEntries: settings.maxEntries, maxBytes: settings.maxBytes, ttlMs: settings.ttlMs, filter: settings.filter } : null,
    });
  }
  if (message?.record) {
    const start = process.hrtime.bigint();
    try {
      const { op, key, keys, to } = message.record;
      const tombstones = app.get(TombstoneService);
      if (op === 'hide') await tombstones.recordHidden('item', key);
      else if (op === 'merge') await tombstones.recordMerge('item', keys, to);
      else await write(message.record);
      process.send({ recorded: { ms: Number(process.hrtime.bigint() - start) / 1e6 } });
    } catch (error) {
      process.send({ recorded: { error: error?.message ?? String(error), ms: Number(process.hrtime.bigint() - start) / 1e6 } });
    }
  }
});
// The parent going away ends the app too.
process.on('disconnect', () => process.exit(0));
process.send({ ready: true, port, adapter: adapterName, lookup: lookup?.stats() ?? null });
