// The live camera: frames from getUserMedia, inspected one after another by the model's worker.
// A new frame is taken only when the previous one has been inspected and drawn, so the view lags
// the camera by at most one inspection and nothing queues up on a slow device; the frame rate
// shown is that of inspected frames.

const WINDOW = 10; // frames the rate is averaged over

export class LiveCamera {
  // `inspect(bitmap, frameNumber)` inspects and draws one frame (an ImageBitmap at the camera's
  // resolution, transferred); `onRate(framesPerSecond)` is told after each one.
  constructor(video, inspect, onRate) {
    Object.assign(this, { video, inspect, onRate });
    this.stream = null;
    this.running = false;
    this.loop = Promise.resolve();
    this.frames = 0;
    this.fps = 0;
    this.done = []; // when the last frames were done
  }

  get on() { return this.stream !== null; }

  // Open the camera and start inspecting. Rejects with a message a person can act on.
  async start() {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new Error('camera: this browser gives this page no camera access (it needs https or localhost)');
    }
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: false, video: { width: { ideal: 1920 }, height: { ideal: 1080 } },
      });
    } catch (e) {
      throw new Error(describe(e));
    }
    this.video.srcObject = this.stream;
    await this.video.play();
    while (!this.video.videoWidth) await new Promise((r) => requestAnimationFrame(r));
    this.resume();
  }

  resume() {
    if (!this.on || this.running) return;
    this.running = true;
    this.done = [performance.now()]; // the first frame's rate counts from here
    this.loop = this.run();
  }

  // Stop taking frames; resolves once the frame in flight has been drawn (it stays on screen).
  async pause() {
    this.running = false;
    await this.loop;
  }

  async stop() {
    await this.pause();
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.stream = null;
    this.video.srcObject = null;
  }

  async run() {
    while (this.running) {
      const bitmap = await createImageBitmap(this.video);
      try {
        await this.inspect(bitmap, ++this.frames);
      } catch (e) {
        this.running = false;
        throw e;
      }
      this.done.push(performance.now());
      if (this.done.length > WINDOW) this.done.shift();
      const n = this.done.length;
      if (n >= 2) this.fps = ((n - 1) * 1000) / (this.done[n - 1] - this.done[0]);
      this.onRate(this.fps);
    }
  }
}

function describe(e) {
  switch (e?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'camera: permission denied (allow the camera for this page, then try again)';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'camera: no camera found';
    case 'NotReadableError':
    case 'AbortError':
      return 'camera: the camera could not be started (is another program using it?)';
    default:
      return `camera: ${e?.message ?? e}`;
  }
}
