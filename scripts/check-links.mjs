#!/usr/bin/env node
// Checks the relative links of README.md, CHANGELOG.md and docs/*.md: every linked file must
// exist, and every #anchor must name a heading (or an explicit id) of its target, computed the
// way GitHub computes heading ids. Plain Node, no dependencies.
//
//   node scripts/check-links.mjs          # exits 1 and lists every broken link
//
// Absolute URLs (https:, mailto:, ...) are not fetched: only what lives in the repository.

import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The Markdown files whose links are checked, relative to the repository root. */
function sources() {
  const files = ['README.md', 'CHANGELOG.md'].filter((file) => existsSync(path.join(root, file)));
  const docs = path.join(root, 'docs');
  if (existsSync(docs)) {
    for (const name of readdirSync(docs).sort()) if (name.endsWith('.md')) files.push(`docs/${name}`);
  }
  return files;
}

/**
 * The lines of a Markdown file outside fenced code blocks, with inline code spans blanked out
 * (a link in backticks is not a link) unless `blankCode` is false. Line numbers are kept: lines of
 * code blocks stay as ''.
 */
function proseLines(text, blankCode = true) {
  const lines = text.split(/\r?\n/);
  const out = [];
  let fence = null;
  for (const line of lines) {
    const opening = /^ {0,3}(`{3,}|~{3,})/.exec(line);
    if (fence) {
      const closing = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(line);
      if (closing && closing[1][0] === fence[0] && closing[1].length >= fence.length) fence = null;
      out.push('');
      continue;
    }
    if (opening) {
      fence = opening[1];
      out.push('');
      continue;
    }
    out.push(blankCode ? line.replace(/(`+)(?:(?!\1)[\s\S])*?\1/g, (span) => ' '.repeat(span.length)) : line);
  }
  return out;
}

/** GitHub's heading id: lower case, punctuation dropped (but `-` and `_`), each space a `-`. */
function slug(text) {
  return text
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
    .replace(/ /g, '-');
}

/** A heading's text as GitHub renders it: no markup, links reduced to their text. */
function headingText(raw) {
  return raw
    .replace(/!\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/\[([^\]]*)\]\[[^\]]*\]/g, '$1')
    .replace(/<[^>]+>/g, '')
    .replace(/`/g, '')
    .replace(/(\*\*|__)(.+?)\1/g, '$2')
    .replace(/(^|\W)[*_](.+?)[*_](?=\W|$)/g, '$1$2')
    .trim();
}

/** Whether a line is paragraph text, which a setext underline (`===`, `---`) turns into a heading. */
function isParagraphLine(line) {
  return (
    line.trim() !== '' &&
    !/^ {0,3}(#|>|[-*+]\s|\d+[.)]\s|\||<)/.test(line) &&
    !/^ {0,3}([-*_])( *\1){2,}\s*$/.test(line) &&
    !/^ {4}/.test(line)
  );
}

const anchorCache = new Map();

/** Every anchor a Markdown file defines: heading ids (deduplicated as GitHub does) and explicit ids. */
function anchorsOf(file) {
  if (anchorCache.has(file)) return anchorCache.get(file);
  const anchors = new Set();
  const seen = new Map();
  const add = (text) => {
    const base = slug(headingText(text));
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    anchors.add(count === 0 ? base : `${base}-${count}`);
  };
  const lines = proseLines(readFileSync(file, 'utf8'), false);
  lines.forEach((line, i) => {
    const atx = /^ {0,3}#{1,6}(?:\s+(.*?))?(?:\s+#+)?\s*$/.exec(line);
    if (atx) add(atx[1] ?? '');
    else if (i > 0 && /^ {0,3}(=+|-+)\s*$/.test(line) && isParagraphLine(lines[i - 1])) add(lines[i - 1].trim());
    for (const match of line.matchAll(/<a\s[^>]*\b(?:name|id)\s*=\s*["']([^"']+)["']/gi)) anchors.add(match[1]);
  });
  anchorCache.set(file, anchors);
  return anchors;
}

/** The link targets of one line: inline links and images, and `<a href>`. */
function inlineTargets(line) {
  const targets = [];
  for (const match of line.matchAll(/!?\[(?:[^[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+(?:"[^"]*"|'[^']*'|\([^)]*\)))?\s*\)/g)) {
    targets.push(match[1].replace(/^<|>$/g, ''));
  }
  for (const match of line.matchAll(/<a\s[^>]*\bhref\s*=\s*["']([^"']+)["']/gi)) targets.push(match[1]);
  return targets;
}

function check() {
  const problems = [];
  let checked = 0;
  for (const source of sources()) {
    const file = path.join(root, source);
    const lines = proseLines(readFileSync(file, 'utf8'));
    const links = [];
    lines.forEach((line, i) => {
      // Reference definitions: `[name]: target`.
      const definition = /^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)/.exec(line);
      if (definition) links.push({ line: i + 1, target: definition[1].replace(/^<|>$/g, '') });
      else for (const target of inlineTargets(line)) links.push({ line: i + 1, target });
    });
    for (const { line, target } of links) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('//')) continue; // absolute URL
      checked++;
      const hash = target.indexOf('#');
      const rawPath = hash === -1 ? target : target.slice(0, hash);
      const anchor = hash === -1 ? null : decodeURIComponent(target.slice(hash + 1));
      let pathPart;
      try {
        pathPart = decodeURIComponent(rawPath.split('?')[0]);
      } catch {
        problems.push(`${source}:${line}: ${target}: the path is not valid percent-encoding`);
        continue;
      }
      const resolved = pathPart === '' ? file : path.resolve(path.dirname(file), pathPart);
      if (!resolved.startsWith(root + path.sep) && resolved !== root) {
        problems.push(`${source}:${line}: ${target}: points outside the repository`);
        continue;
      }
      if (!existsSync(resolved)) {
        problems.push(`${source}:${line}: ${target}: ${path.relative(root, resolved)} does not exist`);
        continue;
      }
      if (anchor === null || anchor === '') continue;
      if (statSync(resolved).isDirectory() || !resolved.endsWith('.md')) {
        problems.push(`${source}:${line}: ${target}: an anchor into a file that is not Markdown`);
        continue;
      }
      if (!anchorsOf(resolved).has(anchor)) {
        problems.push(`${source}:${line}: ${target}: ${path.relative(root, resolved)} has no heading with the id #${anchor}`);
      }
    }
  }
  return { problems, checked };
}

const { problems, checked } = check();
if (problems.length > 0) {
  console.error(`${problems.length} broken link(s):`);
  for (const problem of problems) console.error(`  ${problem}`);
  process.exit(1);
}
process.stdout.write(`${checked} relative link(s) checked in ${sources().length} file(s): all good.\n`);
