import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { type Browser, chromium } from 'playwright-core';

/**
 * The Chromium the browser suites drive: `CHROMIUM` (any Chromium or Chrome executable), else
 * Debian's `chromium` on the PATH (scripts/install-chromium.sh installs it; `.ci/run` runs it).
 * Nothing downloads a browser: playwright-core only drives the one found here.
 */
export function findChromium(): string {
  const candidates = [process.env.CHROMIUM, ...['chromium', 'chromium-browser'].map(onPath)].filter((file): file is string => !!file);
  const found = candidates.find((file) => existsSync(file));
  if (!found) {
    throw new Error(
      'No Chromium for the browser suites: run scripts/install-chromium.sh (Debian: apt-get install chromium), ' +
        'or set CHROMIUM to a Chromium or Chrome executable.',
    );
  }
  return found;
}

function onPath(name: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

export interface TestBrowser {
  readonly browser: Browser;
  close(): Promise<void>;
}

/**
 * A headless Chromium (playwright-core gives it a new, empty profile, removed when it closes).
 * The flags keep it off the network but for the pages a test serves on 127.0.0.1 (background
 * networking, updates and sync would try hosts this machine cannot reach), and let it run as root
 * in a container.
 */
export async function launchBrowser(): Promise<TestBrowser> {
  const browser = await chromium.launch({
    executablePath: findChromium(),
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  });
  return { browser, close: () => browser.close() };
}

/** The base URL of an app listening on an ephemeral port of 127.0.0.1. */
export async function listenLocally(app: { listen(port: number, host: string): Promise<unknown>; getUrl(): Promise<string> }): Promise<string> {
  await app.listen(0, '127.0.0.1');
  return (await app.getUrl()).replace('[::1]', '127.0.0.1').replace('localhost', '127.0.0.1');
}
