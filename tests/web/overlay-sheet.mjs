// A picture of overlays side by side for the README: one row per `hvq predict --out` folder,
// one column per image (in the folders' results.json order), captioned with score and verdict.
//
//   node tests/web/overlay-sheet.mjs OUT.png "label=DIR" ["label=DIR" ...]
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import { join, basename } from 'node:path';

const [out, ...rows] = process.argv.slice(2);
if (!out || rows.length === 0) {
  console.error('usage: node tests/web/overlay-sheet.mjs OUT.png "label=DIR" ...');
  process.exit(1);
}
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
let html = `<html><body style="margin:0;background:#14161a;color:#e6e6e6;font:14px system-ui,sans-serif">
<table id="sheet" style="border-spacing:8px;padding:4px">`;
for (const row of rows) {
  const [label, dir] = row.split('=');
  const results = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8'));
  html += `<tr><th style="text-align:right;padding-right:6px;max-width:110px">${esc(label)}</th>`;
  for (const r of results) {
    const png = readFileSync(join(dir, r.overlay)).toString('base64');
    html += `<td style="text-align:center"><img src="data:image/png;base64,${png}" width="200" height="200"><br>` +
      `${esc(basename(r.image))}<br>score ${r.score.toFixed(1)} · ${esc(r.verdict)}</td>`;
  }
  html += '</tr>';
}
html += '</table></body></html>';
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  await page.setContent(html);
  await page.locator('#sheet').screenshot({ path: out });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
}
