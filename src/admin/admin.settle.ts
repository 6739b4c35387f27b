import { Injectable } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { TombstoneNotifications } from '../cache/tombstone.notifications.js';

/**
 * Makes the admin endpoints read-your-writes on the instance that served them: a write's answer
 * is sent once this instance's lookup cache has heard of it, so the client's next request to the
 * route answers with the change. Other instances hear of it a moment later.
 */
@Injectable()
export class TombstoneAdminWrites {
  private notifications?: TombstoneNotifications | null;

  constructor(private readonly moduleRef: ModuleRef) {}

  async settled<T>(write: Promise<T>): Promise<T> {
    const result = await write;
    await this.listener()?.settle();
    return result;
  }

  private listener(): TombstoneNotifications | null {
    if (this.notifications === undefined) {
      try {
        this.notifications = this.moduleRef.get(TombstoneNotifications, { strict: false });
      } catch {
        this.notifications = null; // No TombstoneModule: no cache to settle.
      }
    }
    return this.notifications;
  }
}
