import { SetMetadata } from '@nestjs/common';
import type { DiscoveryService, MetadataScanner, ModuleRef } from '@nestjs/core';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import { TOMBSTONE_EVENT_TYPES, type TombstoneEvent, type TombstoneEventSink, type TombstoneEventType } from './events.types.js';

const ON_TOMBSTONE_EVENT = 'nestjs-tombstones:on-event';

interface ListenerSettings {
  readonly types: readonly TombstoneEventType[];
  readonly name?: string;
}

/** Options of `@OnTombstoneEvent()`. */
export interface OnTombstoneEventOptions {
  /**
   * The sink's name in the outbox (`listener:<name>`): where this listener's deliveries, retries
   * and dead letters are kept. Default: `<Class>.<method>`. Set it to keep the deliveries when you
   * rename the class or the method.
   */
  name?: string;
}

/**
 * Makes a method of a provider receive tombstone events from the outbox: each committed change,
 * at least once, in commit order per key, on one instance of the app. The method may be async; an
 * error (or a rejected promise) makes the delivery fail, and it is retried with backoff until it
 * succeeds or becomes a dead letter. Its second argument is an `AbortSignal` that aborts when
 * the delivery runs past its lease or the app stops: the outbox stops waiting for it then. Each listener is a sink of its own: one that fails holds
 * back no other. Make it idempotent (the event's `id` is stable across retries).
 *
 * @example
 * @Injectable()
 * export class SearchIndexer {
 *   @OnTombstoneEvent(['tombstone.created', 'tombstone.changed'])
 *   async onTombstone(event: TombstoneEvent) {
 *     await this.index.remove(event.resourceType, event.key);
 *   }
 * }
 */
export function OnTombstoneEvent(
  types: TombstoneEventType | readonly TombstoneEventType[] = TOMBSTONE_EVENT_TYPES,
  options: OnTombstoneEventOptions = {},
): MethodDecorator {
  const list = typeof types === 'string' ? [types] : [...types];
  if (list.length === 0 || list.some((type) => !TOMBSTONE_EVENT_TYPES.includes(type))) {
    throw new TombstoneConfigurationError(`@OnTombstoneEvent(): unknown event type in ${JSON.stringify(types)}.`, [
      `Event types: ${TOMBSTONE_EVENT_TYPES.join(', ')}.`,
    ]);
  }
  if (options.name !== undefined && (typeof options.name !== 'string' || !/^[\x21-\x7e][\x20-\x7e]{0,99}$/.test(options.name))) {
    throw new TombstoneConfigurationError('@OnTombstoneEvent(): `name` must be 1 to 100 printable ASCII characters.');
  }
  const settings: ListenerSettings = { types: list, name: options.name };
  return SetMetadata(ON_TOMBSTONE_EVENT, settings);
}

/**
 * A sink per `@OnTombstoneEvent()` method of the app's singleton providers and controllers; and
 * the methods it cannot deliver to (`Class.method`): those of request-scoped providers, which have
 * no instance outside a request.
 */
export function listenerSinks(discovery: DiscoveryService, scanner: MetadataScanner): { sinks: TombstoneEventSink[]; unreachable: string[] } {
  const sinks: TombstoneEventSink[] = [];
  const unreachable: string[] = [];
  for (const wrapper of [...discovery.getProviders(), ...discovery.getControllers()]) {
    if (!wrapper.isDependencyTreeStatic()) {
      const prototype = (wrapper.metatype as { prototype?: object } | null)?.prototype;
      if (!prototype) continue;
      for (const method of scanner.getAllMethodNames(prototype)) {
        const handler = (prototype as Record<string, unknown>)[method];
        if (typeof handler === 'function' && Reflect.getMetadata(ON_TOMBSTONE_EVENT, handler)) unreachable.push(`${wrapper.name}.${method}`);
      }
      continue;
    }
    const instance = wrapper.instance as Record<string, unknown> | null | undefined;
    if (!instance || typeof instance !== 'object') continue;
    const prototype = Object.getPrototypeOf(instance) as object;
    for (const method of scanner.getAllMethodNames(prototype)) {
      const handler = instance[method];
      if (typeof handler !== 'function') continue;
      const settings = Reflect.getMetadata(ON_TOMBSTONE_EVENT, handler) as ListenerSettings | undefined;
      if (!settings) continue;
      const name = `listener:${settings.name ?? `${instance.constructor.name}.${method}`}`;
      sinks.push({
        name,
        batchSize: 1,
        async deliver(events: readonly TombstoneEvent[], signal: AbortSignal): Promise<void> {
          for (const event of events) {
            if (settings.types.includes(event.type)) await (handler as (event: TombstoneEvent, signal: AbortSignal) => unknown).call(instance, event, signal);
          }
        },
      });
    }
  }
  return { sinks, unreachable };
}

/**
 * The sink that emits events on `@nestjs/event-emitter`'s emitter, or `undefined` when the app has
 * none (`'auto'`). The package is optional: it is loaded only here, only if installed.
 */
export async function eventEmitterSink(setting: boolean | 'auto', moduleRef: ModuleRef): Promise<TombstoneEventSink | undefined> {
  if (setting === false) return undefined;
  let emitter: { emitAsync(event: string, ...values: unknown[]): Promise<unknown[]> } | undefined;
  try {
    const { EventEmitter2 } = (await import('@nestjs/event-emitter')) as typeof import('@nestjs/event-emitter');
    emitter = moduleRef.get(EventEmitter2, { strict: false });
  } catch {
    emitter = undefined;
  }
  if (!emitter) {
    if (setting === 'auto') return undefined;
    throw new TombstoneConfigurationError('TombstoneEventsModule: `eventEmitter: true` needs @nestjs/event-emitter.', [
      'npm install @nestjs/event-emitter, and import EventEmitterModule.forRoot() in your application module.',
    ]);
  }
  const target = emitter;
  return {
    name: 'event-emitter',
    batchSize: 1,
    async deliver(events: readonly TombstoneEvent[]): Promise<void> {
      for (const event of events) await target.emitAsync(event.type, event);
    },
  };
}
