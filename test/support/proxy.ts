import net from 'node:net';

export type Proxy = Awaited<ReturnType<typeof startProxy>>;

/**
 * A TCP proxy in front of PostgreSQL that can stop answering without closing anything, as a
 * network partition or a stuck middlebox does (`allowHalfOpen`: a FIN is not answered), refuse
 * connections, as a stopped server does, or send new connections somewhere else (`retarget`).
 */
export async function startProxy(target: string) {
  let upstreamUrl = new URL(target);
  const sockets = new Set<net.Socket>();
  /** `frozen`: nothing goes through, nothing is closed; `refusing`: new connections are closed at once. */
  const state = { freezeNextListen: false, frozen: false, refusing: false };
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    if (state.refusing) {
      client.on('error', () => undefined);
      client.destroy();
      return;
    }
    const upstream = net.connect({ host: upstreamUrl.hostname, port: Number(upstreamUrl.port || 5432), allowHalfOpen: true });
    let frozen = false;
    const quiet = () => frozen || state.frozen;
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => sockets.delete(socket));
    }
    client.on('data', (chunk: Buffer) => {
      if (quiet()) return;
      if (state.freezeNextListen && chunk.includes('LISTEN nestjs_tombstones')) {
        state.freezeNextListen = false;
        frozen = true;
        return;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => void (quiet() || client.write(chunk)));
    client.on('end', () => void (quiet() || upstream.end()));
    upstream.on('end', () => void (quiet() || client.end()));
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => void (quiet() || client.destroy()));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    state,
    url(database: string): string {
      const url = new URL(database);
      url.hostname = '127.0.0.1';
      url.port = String(port);
      return url.toString();
    },
    /** Where new connections go from now on (those already open stay where they are). */
    retarget(to: string): void {
      upstreamUrl = new URL(to);
    },
    /** Ends the partition: every connection through the proxy is cut. */
    cut(): void {
      for (const socket of sockets) socket.destroy();
    },
    async close(): Promise<void> {
      state.frozen = true;
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
