// The HTML reports of `hvq eval --report` and `hvq predict --report` in headless Chromium
// (Debian's `chromium`): each renders with no console error and no request leaving the file
// (self-contained: images are data: URIs, charts inline SVG), every image decodes, the charts
// and galleries are there. A full-page screenshot of each goes to $HVQ_ARTIFACTS.
//
// The reports come from the shipped model: `eval` on ELPV (a few images per class, as set up by
// scripts/setup.sh; HVQ_ELPV_DIR overrides), `predict` on the bundled samples.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import assert from 'node:assert/strict';
import { checks } from './harness.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const targetDir = process.env.CARGO_TARGET_DIR ?? join(process.env.HOME, '.cache/hvq-target');
const hvqBin = process.env.HVQ_BIN ?? join(targetDir, 'debug/hvq');
const artifacts = process.env.HVQ_ARTIFACTS ?? join(targetDir, 'web-test-artifacts');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const elpv = process.env.HVQ_ELPV_DIR ?? join(process.env.HOME, '.cache/hvq/elpv/elpv_dataset/data');
mkdirSync(artifacts, { recursive: true });

const { check, counts, finish } = checks('report');

const work = mkdtempSync(join(tmpdir(), 'hvq-report-'));
const hvq = (args) => execFileSync(hvqBin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

// Open a report; return what the page shows and what went wrong while it loaded.
async function inspect(browser, file, shot) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') problems.push(`[${m.type()}] ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`[pageerror] ${e.message}`));
  page.on('request', (r) => { if (!r.url().startsWith('file:') && !r.url().startsWith('data:')) problems.push(`[request] ${r.url()}`); });
  await page.goto(pathToFileURL(file).href);
  await page.waitForLoadState('load');
  const seen = await page.evaluate(() => ({
    title: document.title,
    svgs: document.querySelectorAll('svg').length,
    polylines: document.querySelectorAll('svg polyline').length,
    bars: document.querySelectorAll('svg rect[fill-opacity]').length,
    images: [...document.images].map((i) => ({ ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth, src: i.src.slice(0, 21) })),
    headings: [...document.querySelectorAll('h2')].map((h) => h.textContent),
    tables: document.querySelectorAll('table').length,
  }));
  await page.screenshot({ path: join(artifacts, shot), fullPage: true });
  await page.screenshot({ path: join(artifacts, shot.replace('.png', '-top.png')) });
  await context.close();
  return { seen, problems };
}

const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });

await check('eval_report_renders_self_contained', async () => {
  assert.ok(existsSync(join(elpv, 'labels.csv')), `ELPV not found at ${elpv} (scripts/setup.sh fetches it)`);
  const file = join(work, 'eval.html');
  const out = hvq(['eval', '--device', 'cpu', '--data', `elpv:${elpv}?limit=6`, '--report', file]);
  assert.match(out, /report written to/);
  const { seen, problems } = await inspect(browser, file, 'report-eval.png');
  assert.deepEqual(problems, [], problems.join('\n'));
  assert.match(seen.title, /hvq evaluation/);
  // ROC + PR, and histograms for all classes + mono + poly.
  assert.ok(seen.svgs >= 5, JSON.stringify(seen));
  assert.ok(seen.polylines >= 4, 'a ROC and a PR curve per class');
  assert.ok(seen.bars > 0, 'histogram bars');
  assert.ok(seen.headings.some((h) => /false positive/i.test(h)), seen.headings.join(' | '));
  assert.ok(seen.headings.some((h) => /false negative/i.test(h)), seen.headings.join(' | '));
  assert.ok(seen.images.length >= 2, 'gallery images');
  for (const img of seen.images) {
    assert.ok(img.ok, `an image did not load: ${JSON.stringify(img)}`);
    assert.equal(img.src, 'data:image/png;base64');
  }
  console.log(`  eval report: ${(statSync(file).size / 1024).toFixed(0)} kB, ${seen.images.length} images, ${seen.svgs} charts`);
});

await check('predict_report_renders_self_contained', async () => {
  const file = join(work, 'predict.html');
  const out = hvq(['predict', '--device', 'cpu', '--out', join(work, 'pred'), '--report', file, join(root, 'samples')]);
  assert.match(out, /report written to/);
  const { seen, problems } = await inspect(browser, file, 'report-predict.png');
  assert.deepEqual(problems, [], problems.join('\n'));
  assert.match(seen.title, /hvq inspection/);
  assert.equal(seen.images.length, 4, 'the four samples in the gallery');
  for (const img of seen.images) assert.ok(img.ok, JSON.stringify(img));
  assert.ok(seen.bars > 0 && seen.tables >= 2, JSON.stringify(seen));
});

await browser.close();
console.log(`report tests: ${counts.passed} passed, ${counts.failed} failed; screenshots in ${artifacts}`);
finish();
