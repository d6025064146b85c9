// Drawing the photo with its anomaly map, in the model's worker, on the page's canvas (an
// OffscreenCanvas with a 2D context). With the model on WebGPU, the pixels come from the shared
// overlay shader (shaders/overlay.wgsl) run on the model's own device (web/src/render.rs); on
// the CPU, from the same formulas in Rust (blendOverlay, from hvq::overlay).

// RGBA8 pixels of an ImageBitmap (an ImageData).
export function pixels(bitmap) {
  const scratch = new OffscreenCanvas(bitmap.width, bitmap.height).getContext('2d', { willReadFrequently: true });
  scratch.drawImage(bitmap, 0, 0);
  return scratch.getImageData(0, 0, bitmap.width, bitmap.height);
}

class Overlay {
  constructor(canvas) {
    this.ctx = canvas.getContext('2d');
    this.queue = Promise.resolve(); // one draw at a time: they share the read-back buffer
  }

  setImage(bitmap, map, mapWidth, mapHeight) {
    this.ctx.canvas.width = bitmap.width;
    this.ctx.canvas.height = bitmap.height;
    this.photo = pixels(bitmap);
    Object.assign(this, { map, mapWidth, mapHeight });
    this.upload?.();
  }

  draw(lo, hi, weighting, opacity) {
    const run = this.queue.then(async () => {
      const { width, height } = this.photo;
      const rgba = await this.blend(lo, hi, weighting, opacity);
      this.ctx.putImageData(new ImageData(new Uint8ClampedArray(rgba.buffer, rgba.byteOffset, rgba.length), width, height), 0, 0);
    });
    this.queue = run.catch(() => {});
    return run;
  }
}

export class GpuOverlay extends Overlay {
  constructor(canvas, model) {
    super(canvas);
    this.model = model;
    this.kind = 'webgpu';
  }

  upload() {
    const p = this.photo;
    this.model.showImage(new Uint8Array(p.data.buffer), p.width, p.height, this.map, this.mapWidth, this.mapHeight);
  }

  blend(lo, hi, weighting, opacity) {
    return this.model.draw(lo, hi, weighting, opacity);
  }
}

export class CpuOverlay extends Overlay {
  constructor(canvas, blendOverlay) {
    super(canvas);
    this.blendOverlay = blendOverlay; // (rgba, width, height, map, mapWidth, mapHeight, lo, hi, weighting, opacity), in wasm
    this.kind = 'cpu';
  }

  async blend(lo, hi, weighting, opacity) {
    const { width, height, data } = this.photo;
    const rgba = new Uint8Array(data); // blend a copy; keep the photo
    this.blendOverlay(rgba, width, height, this.map, this.mapWidth, this.mapHeight, lo, hi, weighting, opacity);
    return rgba;
  }
}
