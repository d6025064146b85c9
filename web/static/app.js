// The page: the controls and the result panel. The model's worker (worker.js) computes and draws
// the photo with its anomaly map on the canvas (see render.js).
//
// `window.hvq` exposes the state and the latest result (used by the end-to-end test).
// The live camera mode is in camera.js.
// URL parameters: `backend=auto|webgpu|cpu` (where the model runs; default auto),
// `renderer=cpu` (draw the overlay without WebGPU even when the browser has it).

import { LiveCamera } from './camera.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const MAX_DISPLAY = 640; // longest side of the view, CSS pixels

const hvq = (window.hvq = { state: 'loading', backend: null, notice: null, result: null, error: null });

function setState(state) {
  hvq.state = state;
  document.body.dataset.state = state;
}

function showError(message) {
  hvq.error = message;
  $('error').textContent = message;
  $('error').hidden = !message;
}

// ---- the worker, as promises ----------------------------------------------------------------
const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
const pending = new Map();
let nextId = 1;
worker.onmessage = ({ data }) => {
  if (data.type === 'progress') return onProgress(data);
  if (data.type === 'log') return console[data.level]('[worker]', data.text);
  const p = pending.get(data.id);
  if (!p) return;
  pending.delete(data.id);
  if (data.type === 'error') p.reject(new Error(data.message));
  else p.resolve(data);
};
worker.onerror = (e) => { showError(`The model's worker failed: ${e.message}`); setState('error'); };
function call(type, msg = {}, transfer = []) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ ...msg, type, id }, transfer);
  });
}

function onProgress({ done, total, path }) {
  $('load-progress').value = total ? done / total : 0;
  $('load-detail').textContent = `${path} — ${(done / 1e6).toFixed(1)} of ${(total / 1e6).toFixed(1)} MB`;
}

// ---- results -----------------------------------------------------------------------------------
let current = null; // { result, bitmap }

function threshold() { return Number($('threshold').value); }
function opacity() { return Number($('opacity').value); }

async function redraw() {
  if (!current) return;
  showDrawn(await call('draw', { threshold: threshold(), opacity: opacity() }));
}

// The colour scale's ends and the verdict of a drawing.
// An anchored scale (a model with a normal level) reads "normal level → threshold", with colour
// fading in along it.
function showDrawn({ lo, hi, anchored, verdict }) {
  const t = threshold();
  $('legend-lo').textContent = anchored ? `normal ${lo.toFixed(1)}` : lo.toFixed(2);
  $('legend-hi').textContent = anchored ? `threshold ${hi.toFixed(1)}` : hi.toFixed(2);
  $('legend').classList.toggle('anchored', Boolean(anchored));
  $('verdict').textContent = verdict.toUpperCase();
  $('verdict').className = 'verdict ' + verdict;
  $('r-threshold').textContent = t.toFixed(3);
  $('threshold-value').textContent = t.toFixed(2);
  $('opacity-value').textContent = opacity().toFixed(2);
  hvq.verdict = verdict;
}

function setThresholdRange(modelThreshold, score) {
  const slider = $('threshold');
  const top = Math.max(modelThreshold ?? 0, score ?? 0) * 2 || 1;
  slider.max = String(Math.max(Number(slider.max), top));
  slider.min = '0';
}

// The view's size for a photo of `width × height`.
function displaySize(width, height) {
  const scale = Math.min(1, MAX_DISPLAY / Math.max(width, height));
  return { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) };
}

// The result panel for a photo or a camera frame, and `current` for the sliders.
function showResult(result, name, roundTrip) {
  const { width, height } = displaySize(result.width, result.height);
  $('view').style.aspectRatio = `${width} / ${height}`;
  current = { result };
  result.roundTripMs = roundTrip;
  hvq.result = result;
  setThresholdRange(result.threshold, result.score);
  $('r-name').textContent = name;
  $('r-score').textContent = result.score.toFixed(3);
  $('r-class').textContent = result.className + ($('class').value === 'auto' ? ' (auto)' : '');
  $('r-size').textContent = `${result.width} × ${result.height}`;
  const cells = document.querySelectorAll('#times td');
  [...result.times, roundTrip].forEach((ms, i) => { cells[i].textContent = ms.toFixed(1); });
}

async function inspect(bytes, name) {
  if (camera.on) await stopCamera();
  showError('');
  setState('busy');
  const t0 = performance.now();
  try {
    // The wasm checks format and size first, so a bad file is reported by the same code as the CLI.
    const result = await call('inspect', { bytes, name, cls: $('class').value }, [bytes.buffer]);
    const roundTrip = performance.now() - t0;
    const { width, height } = displaySize(result.width, result.height);
    const bitmap = await createImageBitmap(current_blob, { resizeWidth: width, resizeHeight: height, resizeQuality: 'high' });
    await call('show', { bitmap }, [bitmap]);
    showResult(result, name, roundTrip);
    await redraw();
    setState('done');
  } catch (e) {
    // The message names the file and what is wrong; the page stays usable.
    showError(e.message.startsWith(name) ? e.message : `${name}: ${e.message}`);
    setState('error');
  }
}

// The WGSL overlay against the CPU's formulas on the shown photo (see worker.js).
hvq.overlayParity = async () => call('overlayParity', { threshold: threshold(), opacity: opacity() });

// Check this page's compute device against the CPU on a photo (see web/src/self_check.rs).
hvq.selfCheck = async (url, cls = 'auto') => {
  const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
  return (await call('selfCheck', { bytes, name: url, cls }, [bytes.buffer])).stages;
};

let current_blob = null;
async function inspectBlob(blob, name) {
  current_blob = blob;
  const bytes = new Uint8Array(await blob.arrayBuffer());
  await inspect(bytes, name);
}

// ---- live camera -------------------------------------------------------------------------------
// Frames are inspected one after another and drawn with their overlay; "Freeze and save" keeps
// the last inspected frame on screen (the sliders then work on it as on a photo) and downloads
// it as inspected, as shown, and its result row. `hvq.live` has the counters for the test.
hvq.live = { frames: 0, fps: 0, saved: [] };
const camera = new LiveCamera($('video'), inspectFrame, (fps) => {
  hvq.live.fps = fps;
  $('fps').textContent = `${fps.toFixed(fps < 10 ? 2 : 1)} frames/s`;
});

async function inspectFrame(bitmap, number) {
  const name = `camera frame ${number}`;
  const t0 = performance.now();
  const result = await call('frame', {
    bitmap, name, cls: $('class').value, threshold: threshold(), opacity: opacity(),
    display: displaySize(bitmap.width, bitmap.height),
  }, [bitmap]);
  showResult(result, name, performance.now() - t0);
  showDrawn(result.drawn);
  hvq.live.frames = number;
}

function cameraButtons() {
  $('camera').textContent = camera.on ? 'Stop camera' : 'Live camera';
  $('freeze').hidden = !camera.on;
  $('freeze').textContent = camera.running ? 'Freeze and save' : 'Resume live';
  $('fps').hidden = !camera.on;
}

async function startCamera() {
  showError('');
  try {
    await camera.start();
    setState('live');
    camera.loop.catch(cameraFailed);
  } catch (e) {
    cameraFailed(e);
  }
  cameraButtons();
}

async function stopCamera() {
  await camera.stop().catch(() => {}); // a failed frame was reported already
  cameraButtons();
  setState(current ? 'done' : 'ready');
}

function cameraFailed(e) {
  showError(e.message);
  camera.stop().catch(() => {});
  cameraButtons();
  setState('error');
}

// Freeze on the last inspected frame and download it (PNG as the model saw it), the view with
// its overlay (PNG) and its result row (JSON, the columns of every result file).
async function freezeAndSave() {
  await camera.pause();
  cameraButtons();
  setState('done');
  const r = hvq.result;
  const stem = `hvq-camera-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  const { frame, overlay } = await call('save');
  const row = {
    image: `${stem}.png`, class: r.className, score: r.score, threshold: threshold(),
    verdict: hvq.verdict, width: r.width, height: r.height, millis: r.roundTripMs, overlay: `${stem}-overlay.png`,
  };
  const json = new Blob([JSON.stringify([row], null, 1) + '\n'], { type: 'application/json' });
  for (const [blob, name] of [[frame, row.image], [overlay, row.overlay], [json, `${stem}.json`]]) download(blob, name);
  hvq.live.saved.push(row);
}

function download(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
}

$('camera').onclick = () => (camera.on ? stopCamera() : startCamera());
$('freeze').onclick = () => {
  if (camera.running) return freezeAndSave().catch((e) => showError(e.message));
  camera.resume();
  camera.loop.catch(cameraFailed);
  cameraButtons();
  setState('live');
};

// ---- start -------------------------------------------------------------------------------------
// Also the Retry button's: whatever already worked (service worker, samples) is not done again.
let workerRegistered = false;
async function start() {
  if (!workerRegistered && 'serviceWorker' in navigator && params.get('offline') !== '0') {
    workerRegistered = true;
    navigator.serviceWorker.register('sw.js').catch((e) => console.warn('offline cache unavailable:', e));
  }
  if ($('samples').children.length === 0) await showSamples();
  await loadModel();
}

async function showSamples() {
  const response = await fetch('manifest.json', { cache: 'no-store' });
  if (!response.ok) throw new Error(`manifest.json: HTTP ${response.status} ${response.statusText}`);
  const manifest = await response.json();
  for (const s of manifest.samples) {
    const b = document.createElement('button');
    b.dataset.sample = s.name;
    b.title = s.name;
    b.innerHTML = `<img src="${s.path}" alt="${s.name}">`;
    b.onclick = async () => inspectBlob(await (await fetch(s.path)).blob(), s.name);
    $('samples').append(b);
  }
}

// Download and load the model; after a failure, the Retry button calls this again.
let canvasSent = false;
async function loadModel() {
  setState('loading');
  // The canvas is drawn by the worker; it can be handed over once only.
  const canvas = canvasSent ? undefined : $('view').transferControlToOffscreen();
  const retry = canvasSent;
  canvasSent = true;
  const ready = await call('load', {
    canvas, retry, prefer: params.get('backend') ?? 'auto', renderer: params.get('renderer') ?? 'auto',
  }, canvas ? [canvas] : []);
  Object.assign(hvq, { backend: ready.backend, notice: ready.notice, bytes: ready.bytes, loadMs: ready.loadMs, compileMs: ready.compileMs, renderer: ready.renderer });
  $('backend').textContent = ready.backend === 'webgpu' ? 'WebGPU' : 'CPU (wasm)';
  $('backend').className = 'badge ' + ready.backend;
  if (ready.notice) { $('notice').textContent = ready.notice; $('notice').hidden = false; }
  for (const c of ready.classes) $('class').append(new Option(c, c));
  if (ready.threshold != null) {
    $('threshold').max = String(ready.threshold * 2);
    $('threshold').value = String(ready.threshold);
  }
  $('threshold-value').textContent = threshold().toFixed(2);
  setState('ready');
}

$('file').onchange = (e) => { const f = e.target.files[0]; if (f) inspectBlob(f, f.name); };
const drop = $('drop');
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add('over'); };
drop.ondragleave = () => drop.classList.remove('over');
drop.ondrop = (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const f = e.dataTransfer.files[0];
  if (f) inspectBlob(f, f.name);
};
$('threshold').oninput = () => redraw();
$('opacity').oninput = () => redraw();
// A new class applies to the next camera frame by itself; a photo is inspected again.
$('class').onchange = () => { if (current_blob && !camera.on) inspectBlob(current_blob, $('r-name').textContent); };

// A model that fails to download or load leaves a message and a Retry button, never a blank page.
function loadFailed(e) {
  showError(`Could not load the model: ${e.message}`);
  $('backend').textContent = 'not loaded';
  $('retry').hidden = false;
  setState('error');
}
$('retry').onclick = () => {
  $('retry').hidden = true;
  showError('');
  start().catch(loadFailed);
};
start().catch(loadFailed);
