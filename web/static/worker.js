// The model's thread: downloads the wasm and the weights (reporting progress), loads the model on
// WebGPU or the CPU, inspects photos, and draws the result on the page's canvas (transferred here
// as an OffscreenCanvas), so the page stays responsive while the CPU fallback computes. Every
// number (scores, maps, colour scale, CPU overlay) comes from the Rust core.
import init, { WebModel, blendOverlay, colorScale, verdict } from './pkg/hvq_web.js';
import { GpuOverlay, CpuOverlay, pixels } from './render.js';

// The worker's console messages (Rust panics, WebGPU errors) also go to the page's console.
for (const level of ['warn', 'error']) {
  const original = console[level].bind(console);
  console[level] = (...args) => {
    original(...args);
    postMessage({ type: 'log', level, text: args.map(String).join(' ') });
  };
}

const FADE = 2; // hvq::overlay::Weighting::Fade's code: a scale anchored to the model

let model = null;
let canvas = null;
let overlay = null;
let last = null; // the latest result's map and score, for the colour scale and the overlay
let lastFrame = null; // the latest camera frame's pixels (an ImageData at its full size), for saving

// Drop a bad copy from the offline cache (sw.js), so a retry fetches the file again.
async function forget(path) {
  if (!self.caches) return;
  for (const key of await caches.keys()) await (await caches.open(key)).delete(path, { ignoreSearch: true });
}

async function download(files, report, retry) {
  const total = files.reduce((n, f) => n + f.bytes, 0);
  let received = 0;
  const out = [];
  for (const f of files) {
    // A retry must not be answered by the browser's copy of a bad response.
    const response = await fetch(f.path, { cache: retry ? 'no-store' : 'default' });
    if (!response.ok) throw new Error(`${f.path}: HTTP ${response.status} ${response.statusText}`);
    const reader = response.body.getReader();
    const chunks = [];
    let length = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      length += value.length;
      received += value.length;
      report(received, total, f.path);
    }
    // A cut connection or a stale cache can hand over part of a file with no error: the manifest
    // says how large each one is.
    if (f.bytes && length !== f.bytes) {
      await forget(f.path);
      throw new Error(`${f.path}: received ${length} of ${f.bytes} bytes (the download was cut ` +
        'short, or the server has another version of the file)');
    }
    const bytes = new Uint8Array(length);
    let offset = 0;
    for (const c of chunks) { bytes.set(c, offset); offset += c.length; }
    out.push(bytes);
  }
  return { out, total };
}

function makeOverlay(renderer) {
  if (renderer !== 'cpu' && model.enableGpuOverlay()) return new GpuOverlay(canvas, model);
  return new CpuOverlay(canvas, blendOverlay);
}

// Keep a result's map for drawing and turn it into a message (the wasm object is freed).
function keep(r, name) {
  try {
    const map = r.map;
    last = { map, mapWidth: r.mapWidth, mapHeight: r.mapHeight, score: r.score, normalScore: r.normalScore ?? undefined };
    return {
      type: 'result', name, score: r.score, threshold: r.threshold ?? null,
      className: r.className, classIndex: r.classIndex, width: r.width, height: r.height,
      mapWidth: r.mapWidth, mapHeight: r.mapHeight, map: map.slice(), times: Array.from(r.times),
    };
  } finally {
    r.free();
  }
}

// Draw the latest result with a threshold and opacity; the colour scale is the CLI's and the
// desktop app's, and the verdict under the page's threshold is decided by core as everywhere else.
async function draw(threshold, opacity) {
  if (!last) throw new Error('no result yet');
  const [lo, hi, weighting] = colorScale(last.map, last.score, threshold, last.normalScore);
  await overlay.draw(lo, hi, weighting, opacity);
  return { lo, hi, anchored: weighting === FADE, verdict: verdict(last.score, threshold) };
}

const handlers = {
  // Also a retry after a failed load: the canvas came with the first attempt.
  async load(msg) {
    canvas = msg.canvas ?? canvas;
    const response = await fetch('manifest.json', { cache: msg.retry ? 'no-store' : 'default' });
    if (!response.ok) throw new Error(`manifest.json: HTTP ${response.status} ${response.statusText}`);
    const manifest = await response.json();
    const m = manifest.model;
    const { out, total } = await download([manifest.wasm, m.config, m.weights, m.backbone],
      (done, all, path) => postMessage({ type: 'progress', done, total: all, path }), msg.retry);
    const [wasm, config, weights, backbone] = out;
    const t0 = performance.now();
    await init({ module_or_path: wasm });
    const compileMs = performance.now() - t0;
    model = await WebModel.load(new TextDecoder().decode(config), weights, backbone, msg.prefer);
    overlay = makeOverlay(msg.renderer);
    return {
      type: 'ready', backend: model.backend, notice: model.notice ?? null, classes: model.classes,
      threshold: model.threshold ?? null, hasClassifier: model.hasClassifier, bytes: total,
      compileMs, loadMs: model.loadMs, renderer: overlay.kind,
    };
  },
  async inspect(msg) {
    if (!model) throw new Error('the model is not loaded yet');
    lastFrame = null;
    return keep(await model.inspect(new Uint8Array(msg.bytes), msg.name, msg.cls), msg.name);
  },
  // A camera frame (an ImageBitmap at the camera's size): inspected from its pixels, then shown at
  // `display` size with its overlay under the page's threshold and opacity.
  async frame(msg) {
    if (!model) throw new Error('the model is not loaded yet');
    const { bitmap, display } = msg;
    try {
      const photo = pixels(bitmap);
      const r = await model.inspectPixels(new Uint8Array(photo.data.buffer), photo.width, photo.height, msg.name, msg.cls);
      const result = keep(r, msg.name);
      lastFrame = photo;
      const shown = await createImageBitmap(bitmap, { resizeWidth: display.width, resizeHeight: display.height, resizeQuality: 'high' });
      overlay.setImage(shown, last.map, last.mapWidth, last.mapHeight);
      shown.close();
      return { ...result, drawn: await draw(msg.threshold, msg.opacity) };
    } finally {
      bitmap.close();
    }
  },
  // The latest camera frame as inspected (PNG at the camera's size) and as shown (PNG of the
  // canvas, with its overlay).
  async save() {
    if (!lastFrame) throw new Error('no camera frame to save');
    const frame = new OffscreenCanvas(lastFrame.width, lastFrame.height);
    frame.getContext('2d').putImageData(lastFrame, 0, 0);
    await overlay.queue;
    return {
      type: 'saved', frame: await frame.convertToBlob({ type: 'image/png' }),
      overlay: await canvas.convertToBlob({ type: 'image/png' }),
    };
  },
  // The photo at display size for the latest result.
  show(msg) {
    if (!last) throw new Error('no result yet');
    overlay.setImage(msg.bitmap, last.map, last.mapWidth, last.mapHeight);
    msg.bitmap.close();
    return { type: 'shown' };
  },
  // Draw with a threshold and opacity; the colour scale is the CLI's and the desktop app's.
  async draw(msg) {
    return { type: 'drawn', ...(await draw(msg.threshold, msg.opacity)) };
  },
  // The shader's overlay of the shown photo against the CPU's formulas (blendOverlay), under the
  // latest result's colour scale at `threshold`, for every weighting: the largest difference of a
  // channel, and how many channels differ at all (the end-to-end test asks this).
  async overlayParity(msg) {
    if (!(overlay instanceof GpuOverlay)) throw new Error('the overlay is not drawn on WebGPU');
    const [lo, hi] = colorScale(last.map, last.score, msg.threshold, last.normalScore);
    const out = [];
    for (const weighting of [0, 1, 2]) {
      await overlay.queue;
      const gpu = await overlay.blend(lo, hi, weighting, msg.opacity);
      const { width, height, data } = overlay.photo;
      const cpu = new Uint8Array(data);
      blendOverlay(cpu, width, height, last.map, last.mapWidth, last.mapHeight, lo, hi, weighting, msg.opacity);
      let maxDiff = 0;
      let differing = 0;
      for (let i = 0; i < cpu.length; i++) {
        const d = Math.abs(gpu[i] - cpu[i]);
        maxDiff = Math.max(maxDiff, d);
        if (d) differing++;
      }
      out.push({ weighting, maxDiff, differing, channels: cpu.length });
    }
    return { type: 'overlayParity', lo, hi, results: out };
  },
  // This device against a CPU copy of the model, stage by stage (see web/src/self_check.rs).
  async selfCheck(msg) {
    if (!model) throw new Error('the model is not loaded yet');
    const json = await model.selfCheck(new Uint8Array(msg.bytes), msg.name, msg.cls ?? 'auto');
    return { type: 'selfCheck', stages: JSON.parse(json) };
  },
};

self.onmessage = async ({ data: msg }) => {
  try {
    const reply = await handlers[msg.type](msg);
    reply.id = msg.id;
    postMessage(reply);
  } catch (e) {
    postMessage({ type: 'error', id: msg.id, during: msg.type, message: e?.message ?? String(e) });
  }
};
