import { randomUUID } from 'node:crypto';
import { Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import { TOMBSTONE_CHANNEL } from '../tombstone.constants.js';
import { TombstoneTable } from '../table/tombstone.table.js';

/** How long a fence may take to come back before another is sent (a lost or stuck one). */
const FENCE_RETRY_MS = 1_000;

/**
 * Read-your-writes for the writes the database announces (captured ones): after such a write
 * commits on this instance, lookups of its types skip the filter and the store, and ask the
 * database, until this instance has heard every notification committed before it. To know when,
 * it sends a fence of its own (a notification with a token) once the write has committed:
 * notifications arrive in commit order, so when the fence comes back, so has the write's.
 *
 * Fences are shared: while one is on its way, later writes wait for the next, sent when it comes
 * back and covering all of them, so an instance has at most one fence on its way however many
 * writes it makes. Internal.
 */
@Injectable()
export class TombstoneFences implements OnApplicationShutdown {
  private readonly logger = new Logger('TombstoneModule');
  private readonly prefix = `${randomUUID()}/`;
  /** Types written here whose notifications may not have arrived: the ticket of their last write. */
  private readonly types = new Map<string, number>();
  /** Tickets given to writes, in the order they committed. */
  private issued = 0;
  /** The ticket of the fence on its way (it covers every write up to it), or 0. */
  private flying = 0;
  private timer: NodeJS.Timeout | undefined;
  private listening = false;
  private failing = false;

  constructor(private readonly table: TombstoneTable) {}

  /** Whether lookups of `type` must ask the database: a write of it here may not have been heard yet. */
  unsure(type: string): boolean {
    return this.types.size !== 0 && this.types.has(type);
  }

  /** A write of these types has committed on this instance (call it after the commit). */
  written(types: Iterable<string>): void {
    // Not listening: the cache is not used, and starts again empty when it listens.
    if (!this.listening) return;
    const ticket = ++this.issued;
    for (const type of types) this.types.set(type, ticket);
    this.send();
  }

  /** A notification with a token came back (a fence, maybe another instance's or settle()'s). */
  heard(token: string): void {
    if (!token.startsWith(this.prefix)) return;
    const ticket = Number(token.slice(this.prefix.length));
    // Everything that committed before the fence was sent has been heard.
    for (const [type, last] of this.types) if (last <= ticket) this.types.delete(type);
    if (ticket === this.flying) {
      clearTimeout(this.timer);
      this.flying = 0;
      this.failing = false;
      this.send();
    }
  }

  /** The instance listens for changes (again): what it keeps starts empty, nothing is pending. */
  started(): void {
    this.stopped();
    this.listening = true;
  }

  /** The instance stopped listening: the cache is not used, fences would never come back. */
  stopped(): void {
    this.listening = false;
    this.types.clear();
    this.flying = 0;
    clearTimeout(this.timer);
  }

  onApplicationShutdown(): void {
    this.stopped();
  }

  private send(): void {
    if (this.flying !== 0 || this.types.size === 0 || !this.listening) return;
    const ticket = (this.flying = this.issued);
    // Not awaited by the write; a fence that fails or does not come back is sent again.
    this.timer = setTimeout(() => {
      if (this.flying !== ticket) return;
      this.flying = 0;
      this.send();
    }, FENCE_RETRY_MS);
    this.timer.unref();
    this.table.dataSource.query(`SELECT pg_notify($1, $2)`, [TOMBSTONE_CHANNEL, JSON.stringify({ barrier: this.prefix + ticket })]).catch((error: unknown) => {
      if (this.failing) return;
      this.failing = true;
      this.logger.warn(
        `Tombstone lookup cache: could not send a fence after a captured write; lookups of its types ask the database until one comes back: ${(error as Error)?.message ?? String(error)}`,
      );
    });
  }
}
