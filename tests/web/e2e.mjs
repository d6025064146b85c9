// End-to-end test of the web demo in headless Chromium (Debian's `chromium`).
//
// 1. The native CLI (`hvq predict`, CPU backend) scores a bundled sample with the shipped model and
//    writes its 224×224 map (`*_map224.npy`) and score (`results.json`).
// 2. web/dist is served on 127.0.0.1 only; Chromium loads the page with WebGPU on SwiftShader,
//    clicks the same sample, and the page's score and 224×224 map must equal the CLI's within
//    the tolerance below. The overlay must have been drawn by the WGSL shader.
// 3. A second Chromium without WebGPU loads the page in "auto": it must fall back to the CPU
//    (wasm) with a notice, and give the same score and map.
// 4. Bad input (not an image, a truncated PNG, an oversized image) gives a message on the page.
// 5. Offline: once loaded, the page reloads and inspects with the network cut (service worker).
// 6. Model files that arrive cut short or fail (HTTP 500) give a message and a Retry button; a
//    retry that finds them whole loads the model and inspects.
// 7. Live camera: Chromium's fake camera plays a Y4M made from the sample; the page inspects
//    frames continuously on WebGPU and shows the rate; "Freeze and save" downloads the frame, the
//    view and the result row, and the CLI on the saved frame gives the page's score and map. A
//    browser without a camera gets a message.
// Screenshots and a JSON summary (sizes, in-browser times) go to $HVQ_ARTIFACTS.
//
// Tolerance: the CLI runs burn's native CPU backend (SIMD, multi-threaded), the page runs
// SwiftShader's WebGPU or the scalar wasm CPU backend: the same f32 computation in another
// summation order. The golden tests hold our maps to 1e-3 relative to the reference; here the
// same bound applies between two of our own backends: max |web − CLI| ≤ 1e-3 · max |CLI| for
// the map, |Δscore| ≤ 1e-3 · |score|.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, extname, resolve, dirname, basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { checks } from './harness.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const targetDir = process.env.CARGO_TARGET_DIR ?? join(process.env.HOME, '.cache/hvq-target');
const hvqBin = process.env.HVQ_BIN ?? join(targetDir, 'debug/hvq');
const dist = process.env.HVQ_WEB_DIST ?? join(root, 'web/dist');
const artifacts = process.env.HVQ_ARTIFACTS ?? join(targetDir, 'web-test-artifacts');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SAMPLE = 'mono-defect-cell0001.png';
const TOL = 1e-3;
const TIMEOUT = Number(process.env.HVQ_WEB_TIMEOUT_MS ?? 10 * 60 * 1000); // SwiftShader and scalar wasm are slow; nothing here is timed

const { check, counts, finish } = checks('web');

// ---- native reference ------------------------------------------------------------------------
function readNpy(path) {
  const buf = readFileSync(path);
  assert.equal(buf.toString('latin1', 1, 6), 'NUMPY', `${path}: not a .npy file`);
  const headerLen = buf.readUInt16LE(8);
  const header = buf.toString('latin1', 10, 10 + headerLen);
  assert.match(header, /'descr': '<f4'/, `${path}: not little-endian float32`);
  const [h, w] = header.match(/'shape': \((\d+), (\d+)\)/).slice(1).map(Number);
  const data = buf.subarray(10 + headerLen);
  const out = new Float32Array(h * w);
  for (let i = 0; i < out.length; i++) out[i] = data.readFloatLE(i * 4);
  return { h, w, data: out };
}

// The CLI's score, class, verdict and 224×224 map of a PNG file.
function nativeReference(path = join(root, 'samples', SAMPLE)) {
  assert.ok(existsSync(hvqBin), `${hvqBin} is missing: build it with cargo build -p core`);
  const out = mkdtempSync(join(tmpdir(), 'hvq-web-e2e-'));
  execFileSync(hvqBin, ['predict', '--device', 'cpu', '--out', out, path], { stdio: 'inherit' });
  const rows = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
  const map = readNpy(join(out, basename(path).replace('.png', '_map224.npy')));
  return { score: rows[0].score, className: rows[0].class, verdict: rows[0].verdict, map };
}

function compare(web, native, label) {
  assert.equal(web.mapWidth, native.map.w, `${label}: map width`);
  assert.equal(web.mapHeight, native.map.h, `${label}: map height`);
  assert.equal(web.map.length, native.map.data.length, `${label}: map length`);
  let maxAbs = 0;
  let maxDiff = 0;
  for (let i = 0; i < web.map.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(native.map.data[i]));
    maxDiff = Math.max(maxDiff, Math.abs(web.map[i] - native.map.data[i]));
  }
  const scoreDiff = Math.abs(web.score - native.score);
  console.log(`  ${label}: score ${web.score} vs CLI ${native.score} (|Δ| ${scoreDiff.toExponential(2)}), ` +
    `map max |Δ| ${maxDiff.toExponential(2)} (max |map| ${maxAbs.toFixed(3)})`);
  assert.ok(maxDiff <= TOL * maxAbs, `${label}: map differs by ${maxDiff} > ${TOL} × ${maxAbs}`);
  assert.ok(scoreDiff <= TOL * Math.abs(native.score), `${label}: score ${web.score} vs ${native.score}`);
  assert.equal(web.className, native.className, `${label}: class`);
  return { scoreDiff, mapMaxDiff: maxDiff, mapMaxAbs: maxAbs };
}

// ---- static server on 127.0.0.1 ---------------------------------------------------------------
const TYPES = {
  '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json',
  '.wasm': 'application/wasm', '.png': 'image/png', '.wgsl': 'text/wgsl', '.md': 'text/markdown',
  '.safetensors': 'application/octet-stream',
};
// Faults to serve once, by path: 'truncate' (half the file, as a cut connection or a stale cache
// gives) or 'http500'.
const faults = new Map();
function serve() {
  const server = createServer((req, res) => {
    let path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    if (path.endsWith('/')) path += 'index.html';
    const file = resolve(dist, '.' + path);
    if (!file.startsWith(dist) || !existsSync(file)) {
      if (!path.endsWith('favicon.ico')) logs.push(`[server] 404 ${path}`);
      res.writeHead(404); res.end(); return;
    }
    const fault = faults.get(path);
    faults.delete(path);
    if (fault === 'http500') { res.writeHead(500); res.end(); return; }
    let body = readFileSync(file);
    if (fault === 'truncate') body = body.subarray(0, body.length >> 1);
    res.writeHead(200, { 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream', 'Content-Length': body.length });
    res.end(body);
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server)));
}

// ---- browser ----------------------------------------------------------------------------------
const BASE_ARGS = ['--no-sandbox', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];
const WEBGPU_ARGS = ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader'];
// Headless Chromium on Linux without the unsafe-WebGPU switch: navigator.gpu exists but offers no
// adapter, as on a browser whose GPU is blocklisted. The page must fall back to the CPU.
const NO_WEBGPU_ARGS = [];

async function launch(args) {
  return chromium.launch({ executablePath: chromiumPath, headless: true, args: [...BASE_ARGS, ...args] });
}

async function openPage(browser, url, logs) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('console', (m) => logs.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`[pageerror] ${e.message}`));
  page.on('worker', (w) => w.on('console', (m) => logs.push(`[worker ${m.type()}] ${m.text()}`)));
  await page.goto(url);
  await page.waitForFunction(() => ['ready', 'error'].includes(window.hvq?.state), null, { timeout: TIMEOUT });
  const state = await page.evaluate(() => ({ state: window.hvq.state, error: window.hvq.error }));
  assert.equal(state.state, 'ready', `page did not load: ${state.error}\n${logs.join('\n')}`);
  return { context, page };
}

// Before an action whose end the test waits for: the page may still show the previous action's
// state (an earlier 'error') until its handler runs, and the wait would end on that.
async function markState(page) {
  await page.evaluate(() => { window.hvq.error = null; window.hvq.state = 'clicked'; document.body.dataset.state = 'clicked'; });
}

async function runSample(page, name = SAMPLE) {
  await markState(page);
  await page.click(`[data-sample="${name}"]`);
  await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state), null, { timeout: TIMEOUT });
  const r = await page.evaluate(() => ({
    state: window.hvq.state, error: window.hvq.error, verdict: window.hvq.verdict,
    ...window.hvq.result, map: Array.from(window.hvq.result?.map ?? []),
  }));
  assert.equal(r.state, 'done', `inspection failed: ${r.error}`);
  return r;
}

async function timeSamples(page, runs) {
  const times = [];
  for (let i = 0; i < runs; i++) times.push((await runSample(page)).roundTripMs);
  times.sort((a, b) => a - b);
  return { median: times[Math.floor(times.length / 2)], min: times[0], runs };
}

async function uploadBad(page, name, buffer) {
  await markState(page);
  await page.setInputFiles('#file', { name, mimeType: 'image/png', buffer });
  await page.waitForFunction(() => document.body.dataset.state === 'error', null, { timeout: TIMEOUT });
  const message = await page.textContent('#error');
  assert.ok(message.includes(name), `error message names the file: ${message}`);
  return message;
}

function crc32(bytes) {
  let c = ~0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

// A valid PNG header declaring 20000×20000 pixels (400 MP): refused before decoding.
function oversizedPng() {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(20000, 0);
  ihdr.writeUInt32BE(20000, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4); crc.writeUInt32BE(crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr),
    chunk('IDAT', Buffer.alloc(16)), chunk('IEND', Buffer.alloc(0))]);
}

// ---- the test -----------------------------------------------------------------------------------
mkdirSync(artifacts, { recursive: true });
const summary = { sample: SAMPLE, tolerance: TOL, chromium: execFileSync(chromiumPath, ['--version']).toString().trim() };
const manifest = JSON.parse(readFileSync(join(dist, 'manifest.json'), 'utf8'));
summary.wasm_bytes = manifest.wasm.bytes;
summary.download_bytes = manifest.wasm.bytes + Object.values(manifest.model).reduce((n, f) => n + f.bytes, 0);

const native = nativeReference();
summary.native = { score: native.score, className: native.className };
const server = await serve();
const url = `http://127.0.0.1:${server.address().port}/`;
const logs = [];

await check('webgpu_matches_cli', async () => {
  const browser = await launch(WEBGPU_ARGS);
  try {
    const { page, context } = await openPage(browser, url + '?backend=webgpu', logs);
    const info = await page.evaluate(() => ({ backend: window.hvq.backend, renderer: window.hvq.renderer, loadMs: window.hvq.loadMs }));
    assert.equal(info.backend, 'webgpu', 'model on WebGPU');
    assert.equal(info.renderer, 'webgpu', 'overlay drawn by the WGSL shader');
    const r = await runSample(page);
    // The shader draws what the CPU's formulas draw, for each weighting of the colour scale
    // (one step of 8-bit rounding apart at most: the GPU blends in its own float order).
    const parity = await page.evaluate(() => window.hvq.overlayParity());
    for (const p of parity.results) {
      assert.ok(p.maxDiff <= 1, `overlay weighting ${p.weighting}: shader and CPU differ by ${p.maxDiff}`);
    }
    summary.overlay_parity = parity;
    summary.webgpu = { ...compare(r, native, 'WebGPU'), first_ms: r.roundTripMs, load_ms: info.loadMs, times_ms: r.times };
    summary.webgpu.warm = await timeSamples(page, 3);
    await page.screenshot({ path: join(artifacts, 'web-webgpu.png') });

    // Bad input, on the page.
    const notImage = await uploadBad(page, 'notes.png', Buffer.from('this is not an image'));
    assert.match(notImage, /not a recognised image format/);
    const png = readFileSync(join(root, 'samples', SAMPLE));
    const cut = await uploadBad(page, 'cut.png', png.subarray(0, png.length / 3));
    assert.match(cut, /cannot decode/);
    const huge = await uploadBad(page, 'huge.png', oversizedPng());
    assert.match(huge, /too large \(20000×20000\)/);
    await page.screenshot({ path: join(artifacts, 'web-bad-input.png') });
    summary.bad_input_messages = [notImage, cut, huge];

    // Offline: the service worker has cached the site; cut the network and start again.
    await page.evaluate(async () => {
      const reg = await navigator.serviceWorker.ready;
      while (!navigator.serviceWorker.controller && !reg.active) await new Promise((r) => setTimeout(r, 100));
    });
    await page.waitForFunction(async () => {
      const m = await (await fetch('manifest.json')).json();
      const cache = await caches.open(`hvq-${m.version}`);
      return (await cache.keys()).length >= m.files.length;
    }, null, { timeout: TIMEOUT, polling: 500 });
    await context.setOffline(true);
    await page.reload();
    await page.waitForFunction(() => ['ready', 'error'].includes(window.hvq?.state), null, { timeout: TIMEOUT });
    const offline = await runSample(page);
    compare(offline, native, 'WebGPU, offline');
    await context.close();
  } finally {
    await browser.close();
  }
});

await check('cpu_fallback_matches_cli', async () => {
  const browser = await launch(NO_WEBGPU_ARGS);
  try {
    const { page } = await openPage(browser, url, logs);
    const info = await page.evaluate(async () => ({
      backend: window.hvq.backend, renderer: window.hvq.renderer, notice: window.hvq.notice, loadMs: window.hvq.loadMs,
      adapter: navigator.gpu ? String(await navigator.gpu.requestAdapter()) : 'no navigator.gpu',
    }));
    assert.ok(['null', 'no navigator.gpu'].includes(info.adapter), `this browser must have no WebGPU adapter: ${info.adapter}`);
    assert.equal(info.backend, 'cpu', 'auto falls back to the CPU');
    assert.equal(info.renderer, 'cpu', 'overlay drawn on the CPU');
    assert.match(info.notice ?? '', /WebGPU is not available/);
    assert.ok(await page.isVisible('#notice'), 'the notice is shown');
    const r = await runSample(page);
    summary.cpu = { ...compare(r, native, 'CPU fallback'), first_ms: r.roundTripMs, load_ms: info.loadMs, times_ms: r.times };
    summary.cpu.warm = await timeSamples(page, 2);
    await page.screenshot({ path: join(artifacts, 'web-cpu.png') });
    // This browser has no camera (no fake device): a message, and the page stays usable.
    await page.click('#camera');
    await page.waitForFunction(() => window.hvq.state === 'error', null, { timeout: TIMEOUT });
    const denied = await page.evaluate(() => window.hvq.error);
    assert.equal(denied, 'camera: no camera found');
    assert.ok(await page.isVisible('#error'), 'the message is shown');
    assert.equal(await page.textContent('#camera'), 'Live camera');
    summary.no_camera_message = denied;
  } finally {
    await browser.close();
  }
});

await check('broken_model_downloads_show_a_message_and_a_retry', async () => {
  const manifest = JSON.parse(readFileSync(join(dist, 'manifest.json'), 'utf8'));
  const weights = manifest.model.weights;
  const browser = await launch(NO_WEBGPU_ARGS);
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT);
    page.on('console', (m) => logs.push(`[${m.type()}] ${m.text()}`));
    const failedLoad = async () => {
      await page.waitForFunction(() => window.hvq?.state === 'error', null, { timeout: TIMEOUT });
      assert.ok(await page.isVisible('#retry'), 'a Retry button');
      assert.ok(await page.isVisible('#error'), 'the message is shown');
      return page.evaluate(() => window.hvq.error);
    };
    // Without the service worker, so every attempt goes to the server.
    faults.set('/' + weights.path, 'truncate');
    await page.goto(url + '?offline=0');
    const cut = await failedLoad();
    assert.ok(cut.includes(weights.path), cut);
    assert.match(cut, new RegExp(`received ${weights.bytes >> 1} of ${weights.bytes} bytes`));
    await page.screenshot({ path: join(artifacts, 'web-load-failed.png') });
    // A retry that meets a server error says so, and offers the retry again.
    faults.set('/' + manifest.model.config.path, 'http500');
    await markState(page);
    await page.click('#retry');
    const server500 = await failedLoad();
    assert.ok(server500.includes(manifest.model.config.path) && server500.includes('HTTP 500'), server500);
    // The next retry finds the files whole: the page works.
    await markState(page);
    await page.click('#retry');
    await page.waitForFunction(() => ['ready', 'error'].includes(window.hvq?.state), null, { timeout: TIMEOUT });
    const state = await page.evaluate(() => ({ state: window.hvq.state, error: window.hvq.error }));
    assert.equal(state.state, 'ready', state.error);
    assert.ok(!(await page.isVisible('#retry')), 'no Retry button once loaded');
    const r = await runSample(page);
    compare(r, native, 'CPU fallback after a retry');
    summary.load_failure_messages = [cut, server500];
  } finally {
    await browser.close();
  }
});

// A Y4M video (4:2:0, BT.601 limited range, as Chromium's fake camera reads it) of one still
// picture: RGBA pixels of `width × height`.
function y4m(rgba, width, height) {
  const Y = Buffer.alloc(width * height);
  const cw = width >> 1;
  const ch = height >> 1;
  const U = Buffer.alloc(cw * ch);
  const V = Buffer.alloc(cw * ch);
  const at = (x, y) => { const i = 4 * (y * width + x); return [rgba[i], rgba[i + 1], rgba[i + 2]]; };
  const clamp = (v) => Math.max(0, Math.min(255, Math.round(v)));
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const [r, g, b] = at(x, y);
      Y[y * width + x] = clamp(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255);
    }
  }
  for (let y = 0; y < ch; y++) {
    for (let x = 0; x < cw; x++) {
      let [r, g, b] = [0, 0, 0];
      for (const [dx, dy] of [[0, 0], [1, 0], [0, 1], [1, 1]]) {
        const p = at(2 * x + dx, 2 * y + dy);
        r += p[0] / 4; g += p[1] / 4; b += p[2] / 4;
      }
      U[y * cw + x] = clamp(128 + (-37.797 * r - 74.203 * g + 112 * b) / 255);
      V[y * cw + x] = clamp(128 + (112 * r - 93.786 * g - 18.214 * b) / 255);
    }
  }
  const header = Buffer.from(`YUV4MPEG2 W${width} H${height} F10:1 Ip A1:1 C420jpeg\n`, 'latin1');
  return Buffer.concat([header, Buffer.from('FRAME\n', 'latin1'), Y, U, V]);
}

// PNG width and height from the IHDR chunk.
function pngSize(buf) {
  assert.equal(buf.toString('latin1', 1, 4), 'PNG', 'a PNG file');
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) };
}

await check('live_camera_inspects_frames_and_saves_what_the_cli_scores', async () => {
  // The sample's pixels, decoded by the browser, become the fake camera's video.
  let video;
  {
    const browser = await launch(NO_WEBGPU_ARGS);
    try {
      const page = await browser.newPage();
      await page.goto(url + 'manifest.json');
      const { width, height, data } = await page.evaluate(async (path) => {
        const bitmap = await createImageBitmap(await (await fetch(path)).blob());
        const ctx = new OffscreenCanvas(bitmap.width, bitmap.height).getContext('2d');
        ctx.drawImage(bitmap, 0, 0);
        const img = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
        return { width: img.width, height: img.height, data: Array.from(img.data) };
      }, 'samples/' + SAMPLE);
      video = join(mkdtempSync(join(tmpdir(), 'hvq-camera-')), 'camera.y4m');
      writeFileSync(video, y4m(data, width, height));
      summary.camera = { video: { width, height } };
    } finally {
      await browser.close();
    }
  }
  const browser = await launch([...WEBGPU_ARGS, '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream', `--use-file-for-fake-video-capture=${video}`]);
  try {
    const { page, context } = await openPage(browser, url + '?backend=webgpu', logs);
    await context.grantPermissions(['camera'], { origin: url });
    assert.equal(await page.evaluate(() => window.hvq.backend), 'webgpu');
    await page.click('#camera');
    // Continuous: several frames, each inspected and drawn, and a rate on the page.
    await page.waitForFunction(() => window.hvq.live.frames >= 3 || window.hvq.state === 'error', null, { timeout: TIMEOUT });
    const live = await page.evaluate(() => ({ ...window.hvq.live, state: window.hvq.state, error: window.hvq.error }));
    assert.equal(live.state, 'live', `live mode: ${live.error}`);
    assert.ok(live.fps > 0, `frame rate ${live.fps}`);
    assert.match(await page.textContent('#fps'), /^\d+\.\d+ frames\/s$/);
    assert.ok(await page.isVisible('#fps'), 'the rate is shown');
    assert.equal(await page.textContent('#r-name'), `camera frame ${await page.evaluate(() => window.hvq.live.frames)}`);
    await page.screenshot({ path: join(artifacts, 'web-camera.png') });

    // Freeze and save: three downloads, the frame stays on screen.
    const downloads = [];
    page.on('download', (d) => downloads.push(d));
    await page.click('#freeze');
    await page.waitForFunction(() => window.hvq.live.saved.length === 1, null, { timeout: TIMEOUT });
    while (downloads.length < 3) await new Promise((r) => setTimeout(r, 100));
    const saved = {};
    for (const d of downloads) {
      const path = join(artifacts, d.suggestedFilename());
      await d.saveAs(path);
      saved[extname(path) === '.json' ? 'json' : d.suggestedFilename().endsWith('-overlay.png') ? 'overlay' : 'frame'] = path;
    }
    const frozen = await page.evaluate(() => ({
      ...window.hvq.result, map: Array.from(window.hvq.result.map), verdict: window.hvq.verdict,
      frames: window.hvq.live.frames, state: window.hvq.state,
    }));
    assert.equal(frozen.state, 'done');
    assert.equal(await page.textContent('#freeze'), 'Resume live');
    const [row] = JSON.parse(readFileSync(saved.json, 'utf8'));
    assert.equal(row.image, basename(saved.frame));
    assert.equal(row.overlay, basename(saved.overlay));
    assert.equal(row.score, frozen.score);
    assert.equal(row.verdict, frozen.verdict);
    // The frame is saved at the camera's size, the view with its overlay at display size.
    assert.deepEqual(pngSize(readFileSync(saved.frame)), { width: frozen.width, height: frozen.height });
    assert.deepEqual(pngSize(readFileSync(saved.frame)), summary.camera.video);
    const view = await page.evaluate(() => { const r = document.getElementById('view').getBoundingClientRect(); return r.width > 0; });
    assert.ok(view, 'the frozen frame is on screen');
    assert.ok(pngSize(readFileSync(saved.overlay)).width > 0);

    // The CLI on the saved frame: the same score, map, class and verdict as the page.
    const cli = nativeReference(saved.frame);
    summary.camera = { ...summary.camera, ...compare(frozen, cli, 'live camera frame'), frames: frozen.frames,
      fps: live.fps, verdict: frozen.verdict, saved: Object.values(saved).map((p) => basename(p)) };
    assert.equal(frozen.verdict, cli.verdict, 'verdict');

    // Resume and stop: the camera is released.
    await page.click('#freeze');
    await page.waitForFunction((n) => window.hvq.live.frames > n, frozen.frames, { timeout: TIMEOUT });
    await page.click('#camera');
    await page.waitForFunction(() => document.getElementById('camera').textContent === 'Live camera', null, { timeout: TIMEOUT });
    assert.equal(await page.evaluate(() => document.getElementById('video').srcObject), null);
    await context.close();
  } finally {
    await browser.close();
  }
});

server.close();
writeFileSync(join(artifacts, 'web-e2e.json'), JSON.stringify(summary, null, 1));
if (counts.failed) console.log('browser log:\n' + logs.join('\n'));
console.log(`web e2e: artifacts in ${artifacts}`);
finish();
