// Released migrations are frozen: a database that ran one never runs it again, so an edit reaches
// only new installs and the two drift apart. Each file in migrations/ is held here by the SHA-256
// of its text (line endings made LF first, so a Windows checkout hashes the same).
//
// A new migration fails this test until its hash is added below: adding it is the deliberate act
// of releasing it. The failure prints the hash to add.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const FROZEN: Record<string, string> = {
  '1763769600000-create-tombstones.ts': '63ff260308b3a09cfde3f25df05f0eddf4bca0733896750b96ca3c8905fd5ec8',
  '1763856000000-create-tombstone-capture.ts': '5dbcf7907c2925a721c3f251a700a35cef71221074c1d78e72d15c51024cfc70',
  '1764028800000-create-tombstone-misses.ts': '01c0cf8092f6acba39eb88095c5c4a03297eeeacce2c395791f2d89c64977f62',
  '1764115200000-create-tombstone-notify.ts': 'ed3d5ec89af374ed2c7c32fc173cb79d183f5b8d72abe21932dda20be86a2c24',
  '1764979200000-create-tombstone-events.ts': 'b48b663bef7544c68666369ca30d4199efe0090821cf30b941eb6be4c894f273',
  '1765065600000-speed-up-tombstone-notify.ts': '730d71b36f526ba610e1bbb80869feddf48b55794a2c4f19c1b669276edee6f6',
  '1765152000000-create-tombstone-filter-snapshot.ts': 'e8d528c45ad971879157a240cad14a4417c2ebbd196f490f7932dd2b799e632b',
  '1765238400000-add-tombstone-prefix.ts': '54ae6ecd948ee56e164735e3813d2209264f1e4192fe374a4fa4dc4b295cf9da',
};

const RULE = 'released migrations never change; add a new migration';
const dir = fileURLToPath(new URL('../migrations/', import.meta.url));

function migrationHash(text: string): string {
  return createHash('sha256').update(text.replace(/\r\n/g, '\n'), 'utf8').digest('hex');
}

function problems(): string[] {
  const files = readdirSync(dir).sort();
  const found: string[] = [];
  for (const [file, hash] of Object.entries(FROZEN)) {
    if (!files.includes(file)) {
      found.push(`migrations/${file} was removed: ${RULE}.`);
      continue;
    }
    const actual = migrationHash(readFileSync(dir + file, 'utf8'));
    if (actual !== hash) {
      found.push(`migrations/${file} changed (sha256 ${actual}, released as ${hash}): ${RULE}.`);
    }
  }
  for (const file of files.filter((f) => !(f in FROZEN))) {
    const hash = migrationHash(readFileSync(dir + file, 'utf8'));
    found.push(
      `migrations/${file} has no hash: when it is ready to release, add '${file}': '${hash}' to FROZEN in test/migrations.spec.ts.`,
    );
  }
  return found;
}

describe('migrations are frozen', () => {
  it('every file in migrations/ is listed, and none changed or went away', () => {
    const found = problems();
    if (found.length) throw new Error(found.join('\n'));
  });

  it('hashes the same text the same with CRLF or LF line endings', () => {
    expect(migrationHash('a\r\nb\r\n')).toBe(migrationHash('a\nb\n'));
    expect(migrationHash('a\nb\n')).not.toBe(migrationHash('a\nb'));
  });
});
