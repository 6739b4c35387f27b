// Summarises the CPU profiles that `BENCH_PROFILE=<dir> npm run bench` takes (bench/run.js): per
// scenario, where the module app's CPU time per request goes, beside the hand-written app's on the
// same request stream. run.js writes the summary to <dir>/summary.md; to summarise again:
//
//   node bench/profile-summary.js <dir>      (reads <dir>/profiles.json, prints the summary)
//
// A function's time per request is its share of the app's samples that were not idle, times the
// CPU time its process used per request in the profiled run (`process.cpuUsage()`). Samples are
// counted, not timed: on a busy machine a sample's interval also holds the time the thread waited
// for a CPU, which would be charged to whatever it ran last (often a write to a socket). "Self" is
// time in a function's own code; "total" includes what it called.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

// The project's own scripts, by URL: the module's build and the bench apps.
const ROOT = new URL('..', import.meta.url).href;

/** Where a function comes from, by its script's URL. */
function categoryOf({ functionName, url }) {
  if (url === '') return functionName.startsWith('(') ? functionName : 'V8 builtins and native code';
  const inModules = url.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/);
  if (inModules) return inModules[1];
  if (url.startsWith(`${ROOT}dist/src/`)) return 'nestjs-tombstones';
  if (url.startsWith(`${ROOT}bench/`)) return 'bench app (handlers, counters)';
  if (url.startsWith('node:')) return 'Node.js internals';
  return url;
}

/** A readable name for a function: its name and where it is, shortened. */
function nameOf({ functionName, url, lineNumber }) {
  const where = url.replace(/^.*?node_modules\//, '').replace(`${ROOT}dist/`, '').replace(ROOT, '');
  return where ? `${functionName || '(anonymous)'} ${where}:${lineNumber + 1}` : functionName || '(anonymous)';
}

/** Samples by function (self and total) and by origin (self), for one profile. */
export function analyse(file) {
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const self = new Map();
  for (const id of profile.samples) self.set(id, (self.get(id) ?? 0) + 1);

  const functions = new Map();
  const categories = new Map();
  let busy = 0;
  const entry = (node) => {
    const key = nameOf(node.callFrame);
    if (!functions.has(key)) functions.set(key, { name: key, category: categoryOf(node.callFrame), self: 0, total: 0 });
    return functions.get(key);
  };
  // Depth first, with the functions on the path: a node's samples count in the total of each
  // distinct function above it (recursion counted once).
  const walk = (node, path) => {
    const fn = entry(node);
    const samples = self.get(node.id) ?? 0;
    if (node.callFrame.functionName !== '(idle)') {
      busy += samples;
      fn.self += samples;
      categories.set(fn.category, (categories.get(fn.category) ?? 0) + samples);
      for (const above of new Set([...path, fn])) above.total += samples;
    }
    path.push(fn);
    for (const child of node.children ?? []) walk(nodes.get(child), path);
    path.pop();
  };
  walk(profile.nodes[0], []);
  return { functions, categories, busy, samples: profile.samples.length };
}

const us = (micros, digits = 1) => micros.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

/**
 * The summary, as Markdown: per scenario ({ name, profiles: [{ mode, file, requests }] }), time
 * per request by origin for each app, the module app's top functions by self time and by total
 * time in nestjs-tombstones, and the functions whose self time per request grew most over the
 * hand-written app's.
 */
export function summariseProfiles(scenarios, top = 15) {
  const out = ['# CPU profiles: the module app beside the hand-written app', ''];
  out.push(
    'CPU time per request of each app while autocannon drove it with the scenario\'s stream: a function\'s ' +
      'share of the app\'s samples (idle ones left out) times its process\'s CPU time per request in the ' +
      'profiled run. Profiling slows an app down: compare the apps, not these times with the benchmark\'s.',
    '',
  );
  for (const { name, profiles } of scenarios) {
    const runs = Object.fromEntries(
      profiles.map((p) => {
        const a = analyse(p.file);
        // Samples to µs of CPU per request.
        const scale = p.cpuMicros / p.requests / Math.max(1, a.busy);
        return [p.mode, { ...a, requests: p.requests, per: (samples) => samples * scale }];
      }),
    );
    const module = runs.module;
    const other = runs.handwritten;
    out.push(`## ${name}`, '');
    out.push(
      `module: ${module.requests.toLocaleString('en-US')} requests, ${us(module.per(module.busy))} µs CPU per request, ${module.busy.toLocaleString('en-US')} samples not idle` +
        (other ? `; hand-written: ${other.requests.toLocaleString('en-US')} requests, ${us(other.per(other.busy))} µs, ${other.busy.toLocaleString('en-US')} samples.` : '.'),
      '',
    );

    const categories = [...new Set([...module.categories.keys(), ...(other?.categories.keys() ?? [])])]
      .map((category) => ({
        category,
        module: module.per(module.categories.get(category) ?? 0),
        other: other ? other.per(other.categories.get(category) ?? 0) : 0,
      }))
      .sort((a, b) => b.module - b.other - (a.module - a.other));
    out.push('| Self time by origin | module µs/request | hand-written µs/request | difference |', '|---|---:|---:|---:|');
    for (const c of categories.filter((c) => c.module >= 0.5 || c.other >= 0.5)) {
      out.push(`| ${c.category} | ${us(c.module)} | ${us(c.other)} | ${us(c.module - c.other)} |`);
    }
    out.push(`| **all** | ${us(module.per(module.busy))} | ${other ? us(other.per(other.busy)) : '—'} | ${other ? us(module.per(module.busy) - other.per(other.busy)) : '—'} |`, '');

    const fnRow = (fn, field) => {
      const theirs = other?.functions.get(fn.name);
      const mine = module.per(fn[field]);
      const them = theirs ? other.per(theirs[field]) : 0;
      return `| \`${fn.name}\` | ${fn.category} | ${us(mine)} | ${us(them)} | ${us(mine - them)} |`;
    };
    const header = (title) => [`| ${title} | origin | module µs/request | hand-written µs/request | difference |`, '|---|---|---:|---:|---:|'];
    const all = [...module.functions.values()].filter((fn) => fn.category !== '(idle)');

    out.push(...header('Module app, top self time'));
    for (const fn of [...all].sort((a, b) => b.self - a.self).slice(0, top)) out.push(fnRow(fn, 'self'));
    out.push('');
    if (other) {
      out.push(...header('Self time grown most over the hand-written app'));
      const grown = all
        .map((fn) => ({ fn, diff: module.per(fn.self) - (other.functions.get(fn.name) ? other.per(other.functions.get(fn.name).self) : 0) }))
        .sort((a, b) => b.diff - a.diff)
        .slice(0, top);
      for (const { fn } of grown) out.push(fnRow(fn, 'self'));
      out.push('');
    }
    out.push(...header('nestjs-tombstones functions, top total time'));
    for (const fn of all.filter((fn) => fn.category === 'nestjs-tombstones').sort((a, b) => b.total - a.total).slice(0, top)) out.push(fnRow(fn, 'total'));
    out.push('');
  }
  return out.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = process.argv[2];
  if (!dir) throw new Error('usage: node bench/profile-summary.js <dir of BENCH_PROFILE>');
  const scenarios = JSON.parse(readFileSync(join(dir, 'profiles.json'), 'utf8'));
  console.log(summariseProfiles(scenarios));
}
