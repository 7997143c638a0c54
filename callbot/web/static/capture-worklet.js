// The web phone's microphone capture (an AudioWorklet processor, "callbot-capture").
//
// Runs at the AudioContext's own rate (whatever the device gives: 48 kHz, 44.1 kHz, ...), resamples to 24 kHz
// with a windowed-sinc low-pass (Kaiser window, cutoff at 90% of the lower Nyquist, ~80 dB stopband), converts
// to PCM 16-bit and posts one 20 ms chunk (480 samples, 960 bytes) at a time to the page:
//   port.postMessage({pcm: ArrayBuffer, t: <context time of the chunk's first sample>, rms: <0..1>})
// The page sends `pcm` as one binary WebSocket message and uses `rms` for its level meter and its speech timing.
// port message {type: "close"} ends the processor.
//
// The Resampler class is also published as globalThis.CallbotResampler: playback-worklet.js (added to the same
// AudioWorklet after this file) uses it for 24 kHz -> the context's rate.

"use strict";

const OUT_RATE = 24000;
const CHUNK_SAMPLES = 480; // 20 ms at 24 kHz
const ZERO_CROSSINGS = 16; // kernel half-width, in periods of the cutoff (sharper filter, more taps)
const CUTOFF = 0.9; // of the lower rate's Nyquist frequency
const KAISER_BETA = 8.0; // ~80 dB stopband
const MAX_PHASES = 4096;

function gcd(a, b) {
  while (b) [a, b] = [b, a % b];
  return a;
}

function besselI0(x) { // modified Bessel function of the first kind, order 0 (for the Kaiser window)
  let sum = 1, term = 1;
  for (let k = 1; k < 60; k++) {
    term *= (x / (2 * k)) * (x / (2 * k));
    sum += term;
    if (term < sum * 1e-12) break;
  }
  return sum;
}

// A streaming rational resampler (polyphase windowed sinc). Exact integer phase tracking when the rates' ratio
// reduces to at most MAX_PHASES phases (every common rate); otherwise the nearest of MAX_PHASES phases.
// Output sample n is the input instant n * inRate / outRate (centred: no time shift; the latency is `half`
// input samples). Unity gain at DC; the low-pass removes what the lower rate cannot carry (anti-aliasing when
// going down, anti-imaging when going up).
class Resampler {
  constructor(inRate, outRate) {
    inRate = Math.round(inRate);
    outRate = Math.round(outRate);
    const g = gcd(inRate, outRate);
    this.inRate = inRate;
    this.outRate = outRate;
    this.up = outRate / g; // L output samples ...
    this.down = inRate / g; // ... per M input samples
    this.phases = Math.min(this.up, MAX_PHASES);
    const bandwidth = (CUTOFF * Math.min(inRate, outRate)) / inRate; // 2 * cutoff / input rate
    this.half = Math.max(1, Math.ceil(ZERO_CROSSINGS / bandwidth)); // taps each side, in input samples
    const taps = 2 * this.half;
    this.taps = taps;
    this.kernel = new Float32Array(this.phases * taps);
    const i0beta = besselI0(KAISER_BETA);
    for (let p = 0; p < this.phases; p++) {
      const frac = p / this.phases;
      let sum = 0;
      for (let j = 0; j < taps; j++) {
        const x = this.half - 1 - j + frac; // distance of tap j from the output instant, in input samples
        const r = x / this.half;
        const w = Math.abs(r) < 1 ? besselI0(KAISER_BETA * Math.sqrt(1 - r * r)) / i0beta : 0;
        const s = x === 0 ? 1 : Math.sin(Math.PI * bandwidth * x) / (Math.PI * bandwidth * x);
        const h = bandwidth * s * w;
        this.kernel[p * taps + j] = h;
        sum += h;
      }
      for (let j = 0; j < taps; j++) this.kernel[p * taps + j] /= sum;
    }
    this.out = new Float32Array(1024);
    this.reset();
  }

  reset() {
    // input history buf[0 .. fill); the next output is centred at buf index pos + phase / up
    this.buf = new Float32Array(this.taps + 4096);
    this.fill = this.half - 1; // zeros before the first sample, so that the first output is centred on it
    this.pos = this.half - 1;
    this.phase = 0;
  }

  // Feed Float32 input samples; returns the output samples they complete (a view, valid until the next call).
  process(input) {
    if (this.fill + input.length > this.buf.length) {
      const bigger = new Float32Array(Math.max(this.buf.length * 2, this.fill + input.length));
      bigger.set(this.buf.subarray(0, this.fill));
      this.buf = bigger;
    }
    this.buf.set(input, this.fill);
    this.fill += input.length;
    const most = Math.ceil((Math.max(0, this.fill - this.half - this.pos + 1) * this.up) / this.down) + 1;
    if (this.out.length < most) this.out = new Float32Array(most * 2);
    const { buf, kernel, taps, up, down, phases, out, half } = this;
    const step = Math.floor(down / up), stepRest = down % up;
    let n = 0;
    while (this.pos + half < this.fill) {
      const p = phases === up ? this.phase : Math.floor((this.phase * phases) / up);
      const k0 = p * taps, b0 = this.pos - half + 1;
      let acc = 0;
      for (let j = 0; j < taps; j++) acc += buf[b0 + j] * kernel[k0 + j];
      out[n++] = acc;
      this.pos += step;
      this.phase += stepRest;
      if (this.phase >= up) {
        this.phase -= up;
        this.pos += 1;
      }
    }
    const keep = this.pos - half + 1; // the oldest sample still needed
    if (keep > 0) {
      buf.copyWithin(0, keep, this.fill);
      this.fill -= keep;
      this.pos -= keep;
    }
    return out.subarray(0, n);
  }
}

globalThis.CallbotResampler = Resampler;

if (typeof registerProcessor === "function") {
  class CaptureProcessor extends AudioWorkletProcessor {
    constructor() {
      super();
      this.resampler = new Resampler(sampleRate, OUT_RATE);
      this.chunk = new Int16Array(CHUNK_SAMPLES);
      this.filled = 0;
      this.energy = 0;
      this.firstInput = null; // context time of the first captured sample: output n is at firstInput + n / 24000
      this.produced = 0;
      this.chunkStart = 0;
      this.running = true;
      this.port.onmessage = (event) => {
        if (event.data && event.data.type === "close") this.running = false;
      };
    }

    process(inputs) {
      if (!this.running) return false;
      const channel = inputs[0] && inputs[0][0];
      if (!channel) return true; // no input connected (yet)
      if (this.firstInput === null) this.firstInput = currentTime;
      const out = this.resampler.process(channel);
      for (let i = 0; i < out.length; i++) {
        if (this.filled === 0) this.chunkStart = this.firstInput + this.produced / OUT_RATE;
        this.produced++;
        const v = Math.max(-1, Math.min(1, out[i]));
        this.energy += v * v;
        this.chunk[this.filled++] = v < 0 ? Math.round(v * 32768) : Math.round(v * 32767);
        if (this.filled === CHUNK_SAMPLES) {
          const pcm = this.chunk.buffer;
          this.port.postMessage({ pcm, t: this.chunkStart, rms: Math.sqrt(this.energy / CHUNK_SAMPLES) }, [pcm]);
          this.chunk = new Int16Array(CHUNK_SAMPLES);
          this.filled = 0;
          this.energy = 0;
        }
      }
      return true;
    }
  }
  registerProcessor("callbot-capture", CaptureProcessor);
}
