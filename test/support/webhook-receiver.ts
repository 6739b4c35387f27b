import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import type { TombstoneEvent } from '../../src/events/index.js';

/** One request the receiver verified: its `webhook-id` and its body. */
export interface ReceivedWebhook {
  readonly id: string;
  readonly body: { type: string; data: TombstoneEvent };
}

/**
 * A webhook endpoint on 127.0.0.1 that checks each request's signature with the
 * `standardwebhooks` package. Verified requests are answered 204 and kept; a bad signature gets
 * 400. `down` answers 503 without looking; `onHeld` (while set) is called for each verified
 * request, which then gets no answer at all.
 */
export interface WebhookReceiver {
  readonly url: string;
  /** The `whsec_` secret it verifies with. */
  readonly secret: string;
  readonly received: ReceivedWebhook[];
  /** Requests answered 503 (while `down`) or 400 (a bad signature). */
  refused: number;
  down: boolean;
  onHeld: (() => void) | null;
  close(): Promise<void>;
}

export async function startWebhookReceiver(path = '/hooks'): Promise<WebhookReceiver> {
  const secret = `whsec_${randomBytes(32).toString('base64')}`;
  const webhook = new Webhook(secret);
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      if (receiver.down) {
        receiver.refused++;
        res.writeHead(503).end('down for maintenance');
        return;
      }
      let body: ReceivedWebhook['body'];
      try {
        body = webhook.verify(Buffer.concat(chunks).toString('utf8'), req.headers as Record<string, string>) as ReceivedWebhook['body'];
      } catch {
        receiver.refused++;
        res.writeHead(400).end('bad signature');
        return;
      }
      receiver.received.push({ id: String(req.headers['webhook-id']), body });
      if (receiver.onHeld) return receiver.onHeld(); // never answered
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const receiver: WebhookReceiver = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}${path}`,
    secret,
    received: [],
    refused: 0,
    down: false,
    onHeld: null,
    async close() {
      server.closeAllConnections(); // held requests too
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return receiver;
}
