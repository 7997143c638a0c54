// The web phone's bot playback (an AudioWorklet processor, "callbot-playback"). Needs capture-worklet.js added
// to the same AudioWorklet first (it publishes globalThis.CallbotResampler).
//
// In (port messages from the page):
//   ArrayBuffer            bot audio, PCM 16-bit LE mono 24 kHz (as it came off the socket): resampled to the
//                          context's rate and queued
//   {type: "stop"}         drop everything queued at once (barge-in); the played count restarts from 0
//   {type: "status"}       answered with {type: "status", queuedMs, playedMs, playing}
//   {type: "close"}        end the processor
// Out (port messages to the page); `t` is the context time the event takes effect at the output:
//   {type: "started", t}   bot audio starts sounding (after the jitter buffer filled, or after an underrun)
//   {type: "played", ms}   bot audio really played since the last stop, every REPORT_MS while playing
//   {type: "idle", t, ms}  the queue ran dry (the end of a response, or an underrun)
//   {type: "stopped", t, ms, wasPlaying, droppedMs}  a stop took effect: `ms` had played before it
//
// Jitter buffer: a burst starts once PREBUFFER_MS is queued, or PREBUFFER_MS after its first audio arrived
// (short replies), so that network jitter does not cut the bot into pieces; latency added: PREBUFFER_MS.

"use strict";

const IN_RATE = 24000;
const PREBUFFER_MS = 60;
const REPORT_MS = 200;

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.prebuffer = Math.round((sampleRate * (opts.prebufferMs ?? PREBUFFER_MS)) / 1000);
    this.reportSamples = Math.round((sampleRate * (opts.reportMs ?? REPORT_MS)) / 1000);
    const Resampler = globalThis.CallbotResampler;
    if (typeof Resampler !== "function") throw new Error("add capture-worklet.js to the AudioWorklet first");
    this.resampler = new Resampler(IN_RATE, sampleRate);
    this.queue = []; // Float32Array segments at the context's rate
    this.head = 0; // read offset into queue[0]
    this.queued = 0; // samples queued
    this.playing = false;
    this.waitingSince = null; // context time the first audio of a not yet started burst arrived
    this.played = 0; // samples played since the last stop
    this.lastReport = 0;
    this.running = true;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(data) {
    if (data instanceof ArrayBuffer) {
      const pcm = new Int16Array(data, 0, data.byteLength >> 1);
      const input = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) input[i] = pcm[i] / 32768;
      const out = this.resampler.process(input);
      if (out.length) {
        this.queue.push(Float32Array.from(out));
        this.queued += out.length;
        if (!this.playing && this.waitingSince === null) this.waitingSince = currentTime;
      }
    } else if (data && data.type === "stop") {
      const droppedMs = (this.queued / sampleRate) * 1000;
      const wasPlaying = this.playing || this.queued > 0;
      this.port.postMessage({ type: "stopped", t: currentTime, ms: this.playedMs(), wasPlaying, droppedMs });
      this.queue = [];
      this.head = 0;
      this.queued = 0;
      this.playing = false;
      this.waitingSince = null;
      this.played = 0;
      this.lastReport = 0;
      this.resampler.reset();
    } else if (data && data.type === "status") {
      const queuedMs = (this.queued / sampleRate) * 1000;
      this.port.postMessage({ type: "status", queuedMs, playedMs: this.playedMs(), playing: this.playing });
    } else if (data && data.type === "close") {
      this.running = false;
    }
  }

  playedMs() {
    return (this.played / sampleRate) * 1000;
  }

  process(_inputs, outputs) {
    if (!this.running) return false;
    const output = outputs[0];
    const out = output[0];
    if (!out) return true;
    out.fill(0);
    if (!this.playing && this.queued > 0) {
      const waited = this.waitingSince === null ? 0 : (currentTime - this.waitingSince) * sampleRate;
      if (this.queued >= this.prebuffer || waited >= this.prebuffer) {
        this.playing = true;
        this.waitingSince = null;
        this.port.postMessage({ type: "started", t: currentTime });
      }
    }
    if (this.playing) {
      let n = 0;
      while (n < out.length && this.queued > 0) {
        const segment = this.queue[0];
        const take = Math.min(out.length - n, segment.length - this.head);
        out.set(segment.subarray(this.head, this.head + take), n);
        n += take;
        this.head += take;
        this.queued -= take;
        if (this.head === segment.length) {
          this.queue.shift();
          this.head = 0;
        }
      }
      this.played += n;
      if (this.played - this.lastReport >= this.reportSamples) {
        this.lastReport = this.played;
        this.port.postMessage({ type: "played", ms: this.playedMs() });
      }
      if (this.queued === 0) {
        this.playing = false;
        this.lastReport = this.played;
        this.port.postMessage({ type: "idle", t: currentTime + n / sampleRate, ms: this.playedMs() });
      }
    }
    for (let c = 1; c < output.length; c++) output[c].set(out);
    return true;
  }
}

registerProcessor("callbot-playback", PlaybackProcessor);
