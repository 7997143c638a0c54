// The web phone: talk to callbot's agent from a browser. Plain JavaScript, no build step, no framework.
//
// Flow: GET /phone/config (is a key needed?) -> on Call: an AudioContext with the two worklets
// (capture-worklet.js: microphone at the context's rate -> 24 kHz PCM16 in 20 ms chunks; playback-worklet.js: bot
// audio with a small jitter buffer) and the microphone (echo cancellation, noise suppression, auto gain) ->
// POST /api/phone/session {key} -> WS /ws/phone/{call_id}?token=... (the wire protocol is documented in
// callbot/web/adapter.py). The key lives only in the input field until the exchange, then the field is cleared:
// it never goes in a URL, storage or the page.
//
// Latencies are measured by the page itself, on the AudioContext's clock (the worklets time-stamp what they
// capture and play; the device's own input/output latency is not included): "reply" = end of the caller's
// speech (the page's own level detector: SPEECH_RMS, after SPEECH_HANGOVER_MS of quiet) -> the first bot audio
// played after it; "barge-in" = start of caller speech while the bot was playing -> the server's stop taking
// effect in the playback worklet.
//
// window.callbotPhone: a read-only status object for tests and curious people (every read is a copy):
//   state           "loading" | "idle" | "starting" | "connecting" | "connected" | "ended"
//   keyRequired     the service asks for an access key
//   callId          the current (or last) call's id, null before the first call
//   ready           the agent's session is up (the server said "ready")
//   endedReason     why the last call ended (null while none has), error: the last error shown (or null)
//   sampleRate      the AudioContext's rate (the capture worklet resamples it to 24000)
//   micChunksSent   20 ms caller chunks sent; micChunksDropped: not sent (socket backed up or not open)
//   botChunks, botBytes   bot audio messages and bytes received
//   botAudioMs      bot audio really played this call (all of it, across stops)
//   botSpeaking     bot audio is playing now; speaking: the page hears the caller now
//   stops           server "stop" messages (barge-ins, key presses), stopsWhilePlaying: of those, with bot audio
//                   playing or queued
//   replyLatencies, bargeIns   every measured latency in ms; lastReplyMs, lastBargeInMs: the latest (or null)
//   transcript      [{role: "caller" | "bot", text, interrupted}]
//   dtmfSent        the keys sent this call, in order ("15#")

"use strict";

(() => {
  const SPEECH_RMS = 0.01; // -40 dBFS: a 20 ms chunk this loud counts as speech
  const SPEECH_ONSET_CHUNKS = 2; // this many loud chunks in a row start speech (dated from the first)
  const SPEECH_HANGOVER_MS = 500; // this much quiet ends it (dated at the end of the last loud chunk)
  const MAX_SOCKET_BACKLOG = 48000; // bytes waiting in the socket (1 s of audio): drop mic chunks past it
  const KEYS = "0123456789*#";

  const $ = (id) => document.getElementById(id);
  const ui = {
    state: $("state"), error: $("error"), keyForm: $("key-form"), key: $("key"), call: $("call"),
    hangup: $("hangup"), level: $("level"), reply: $("reply-latency"), barge: $("barge-latency"),
    transcript: $("transcript"), keys: Array.from(document.querySelectorAll("[data-key]")),
  };

  const status = {
    state: "loading", keyRequired: false, callId: null, ready: false, endedReason: null, error: null,
    sampleRate: null, micChunksSent: 0, micChunksDropped: 0, botChunks: 0, botBytes: 0, botAudioMs: 0,
    botSpeaking: false, speaking: false, stops: 0, stopsWhilePlaying: 0, replyLatencies: [], bargeIns: [],
    lastReplyMs: null, lastBargeInMs: null, transcript: [], dtmfSent: "",
  };
  const view = {};
  for (const name of Object.keys(status)) {
    Object.defineProperty(view, name, {
      enumerable: true,
      get: () => (Array.isArray(status[name]) ? Object.freeze(status[name].slice()) : status[name]),
    });
  }
  Object.defineProperty(window, "callbotPhone", { value: Object.freeze(view), writable: false });

  let config = { key_required: false };
  let call = null; // the current call's state: one object per call, dropped when it ends

  function setState(state, text) {
    status.state = state;
    ui.state.dataset.state = state;
    ui.state.textContent = text;
  }

  function showError(text) {
    status.error = text || null;
    ui.error.textContent = text;
    ui.error.hidden = !text;
  }

  function setInCall(inCall) {
    ui.call.disabled = inCall;
    ui.hangup.disabled = !inCall;
    ui.key.disabled = inCall;
    for (const button of ui.keys) button.disabled = !inCall;
  }

  function addTranscript(role, text, interrupted) {
    const line = Object.freeze({ role, text, interrupted: Boolean(interrupted) });
    status.transcript.push(line);
    const li = document.createElement("li");
    li.className = role + (line.interrupted ? " interrupted" : "");
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "caller" ? "You: " : "Bot: ";
    li.append(who, document.createTextNode(text));
    if (line.interrupted) {
      const mark = document.createElement("span");
      mark.className = "mark";
      mark.textContent = " (interrupted)";
      li.append(mark);
    }
    ui.transcript.append(li);
    li.scrollIntoView({ block: "nearest" });
  }

  function showLatency(element, list, key, ms) {
    const value = Math.round(ms);
    list.push(value);
    status[key] = value;
    element.textContent = `${value} ms`;
  }

  // -- the microphone: level meter and the page's own speech timing -------------------------------------------

  function onMicChunk(c, { pcm, t, rms }) {
    c.rms = rms;
    const loud = rms >= SPEECH_RMS;
    if (loud) {
      c.loudRun += 1;
      if (c.loudRun === 1) c.runStart = t;
      c.lastLoudEnd = t + 0.02;
      if (!status.speaking && c.loudRun >= SPEECH_ONSET_CHUNKS) {
        status.speaking = true;
        c.replied = false;
        const botTalking = status.botSpeaking || c.runStart - c.botIdleAt < 0.3;
        c.pendingBarge = botTalking ? c.runStart : null;
      }
    } else {
      c.loudRun = 0;
      if (status.speaking && t - c.lastLoudEnd >= SPEECH_HANGOVER_MS / 1000) {
        status.speaking = false;
        c.awaitingReply = !c.replied;
      }
    }
    if (c.ws && c.ws.readyState === WebSocket.OPEN && c.ws.bufferedAmount < MAX_SOCKET_BACKLOG) {
      c.ws.send(pcm);
      status.micChunksSent += 1;
    } else {
      status.micChunksDropped += 1;
    }
  }

  function drawLevel() {
    if (!call) return;
    const db = 20 * Math.log10(Math.max(call.rms, 1e-6));
    ui.level.value = Math.min(1, Math.max(0, (db + 60) / 60));
    ui.level.textContent = `${Math.round(db)} dBFS`;
    requestAnimationFrame(drawLevel);
  }

  // -- bot audio: what the playback worklet reports --------------------------------------------------------------

  function sendJson(c, message) {
    if (c.ws && c.ws.readyState === WebSocket.OPEN) c.ws.send(JSON.stringify(message));
  }

  function onPlayback(c, data) {
    if (data.type === "played" || data.type === "idle") {
      status.botAudioMs = c.playedBefore + data.ms;
      if (!c.stopping) sendJson(c, { type: "played", ms: Math.round(data.ms) });
    }
    if (data.type === "started") {
      status.botSpeaking = true;
      const quiet = !status.speaking || data.t - c.lastLoudEnd > 0.15;
      if (!c.replied && quiet && (c.awaitingReply || status.speaking)) {
        showLatency(ui.reply, status.replyLatencies, "lastReplyMs", (data.t - c.lastLoudEnd) * 1000);
        c.replied = true;
        c.awaitingReply = false;
      }
    } else if (data.type === "idle") {
      status.botSpeaking = false;
      c.botIdleAt = data.t;
    } else if (data.type === "stopped") {
      c.stopping = false;
      c.playedBefore += data.ms;
      status.botAudioMs = c.playedBefore;
      status.botSpeaking = false;
      c.botIdleAt = data.t;
      sendJson(c, { type: "played", ms: 0 }); // the count restarts at the stop, as the server's does
      if (data.wasPlaying) {
        status.stopsWhilePlaying += 1;
        if (c.pendingBarge !== null && data.t - c.pendingBarge < 2) {
          showLatency(ui.barge, status.bargeIns, "lastBargeInMs", (data.t - c.pendingBarge) * 1000);
        }
      }
      c.pendingBarge = null;
    }
  }

  // -- the socket ------------------------------------------------------------------------------------------------

  function onServerMessage(c, event) {
    if (event.data instanceof ArrayBuffer) {
      status.botChunks += 1;
      status.botBytes += event.data.byteLength;
      c.playback.port.postMessage(event.data, [event.data]);
      return;
    }
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch (err) {
      console.warn("web phone: a message that is not JSON from the server", err);
      return;
    }
    switch (msg.type) {
      case "ready":
        status.ready = true;
        setState("connected", "Connected: talk to the agent.");
        break;
      case "stop":
        status.stops += 1;
        c.stopping = true;
        c.playback.port.postMessage({ type: "stop" });
        break;
      case "transcript":
        addTranscript(msg.role === "bot" ? "bot" : "caller", String(msg.text || ""), msg.interrupted);
        break;
      case "speech":
        break; // the service's own speech detection: the page times speech with its own detector
      case "ended":
        endCall(c, String(msg.reason || "the agent ended the call"));
        break;
      default:
        console.warn("web phone: unknown message type from the server", msg.type);
    }
  }

  function closeReason(code) {
    if (code === 1008) return "refused: the session was not valid (expired or already used); call again";
    if (code === 1013) return "the service is busy: try again later";
    if (code === 1000) return "the call ended";
    return `the connection closed (code ${code})`;
  }

  // -- a call ----------------------------------------------------------------------------------------------------

  async function exchangeKey(key) {
    let response;
    try {
      response = await fetch("/api/phone/session", {
        method: "POST", headers: { "Content-Type": "application/json" }, cache: "no-store",
        body: JSON.stringify(key === null ? {} : { key }),
      });
    } catch (err) {
      throw new Error(`could not reach callbot (${err.message})`);
    }
    if (response.ok) return response.json();
    if (response.status === 401) throw new Error("wrong key");
    if (response.status === 429) {
      throw new Error(`too many attempts: try again in ${response.headers.get("Retry-After") || "a few"} s`);
    }
    if (response.status === 503) throw new Error("the service is busy: try again later");
    throw new Error(`could not start the call (HTTP ${response.status})`);
  }

  async function startCall() {
    showError("");
    const key = config.key_required ? ui.key.value : null;
    if (config.key_required && !key) {
      showError("Enter the access key first.");
      ui.key.focus();
      return;
    }
    const c = {
      ctx: null, stream: null, capture: null, playback: null, ws: null, ended: false, rms: 0, loudRun: 0,
      runStart: 0, lastLoudEnd: 0, awaitingReply: false, replied: true, pendingBarge: null, botIdleAt: -1,
      playedBefore: 0, stopping: false, hungUp: false,
    };
    call = c;
    Object.assign(status, {
      callId: null, ready: false, endedReason: null, micChunksSent: 0, micChunksDropped: 0, botChunks: 0,
      botBytes: 0, botAudioMs: 0, botSpeaking: false, speaking: false, stops: 0, stopsWhilePlaying: 0,
      dtmfSent: "",
    });
    setInCall(true);
    setState("starting", "Starting: allow the microphone…");
    try {
      c.ctx = new AudioContext({ latencyHint: "interactive" });
      status.sampleRate = c.ctx.sampleRate;
      await c.ctx.audioWorklet.addModule("/phone/static/capture-worklet.js");
      await c.ctx.audioWorklet.addModule("/phone/static/playback-worklet.js");
      c.stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
      });
      if (c.ended) { // hung up while the browser asked for the microphone
        for (const track of c.stream.getTracks()) track.stop();
        return;
      }
      c.playback = new AudioWorkletNode(c.ctx, "callbot-playback", {
        numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
      });
      c.playback.port.onmessage = (event) => onPlayback(c, event.data);
      c.playback.connect(c.ctx.destination);
      c.capture = new AudioWorkletNode(c.ctx, "callbot-capture", {
        numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1], channelCount: 1, channelCountMode: "explicit",
      });
      c.capture.port.onmessage = (event) => onMicChunk(c, event.data);
      c.ctx.createMediaStreamSource(c.stream).connect(c.capture);
      c.capture.connect(c.ctx.destination); // silent: it keeps the capture pulled by the graph everywhere
      await c.ctx.resume();
      requestAnimationFrame(drawLevel);
    } catch (err) {
      const denied = err && (err.name === "NotAllowedError" || err.name === "SecurityError");
      failCall(c, denied ? "the microphone was not allowed" : `audio could not start (${err.message || err})`);
      return;
    }
    setState("connecting", "Connecting…");
    let session;
    try {
      session = await exchangeKey(key);
    } catch (err) {
      failCall(c, err.message);
      return;
    } finally {
      ui.key.value = ""; // the key is not kept, whatever happened
    }
    if (c.ended) return;
    status.callId = session.call_id;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    c.ws = new WebSocket(`${scheme}//${location.host}${session.socket}`);
    c.ws.binaryType = "arraybuffer";
    c.ws.onmessage = (event) => onServerMessage(c, event);
    c.ws.onclose = (event) => endCall(c, c.hungUp ? "you hung up" : closeReason(event.code));
    c.ws.onerror = () => console.warn("web phone: socket error");
  }

  function failCall(c, reason) {
    showError(`Could not call: ${reason}.`);
    release(c);
    setState("idle", config.key_required ? "Enter the access key and press Call." : "Press Call to talk to the agent.");
  }

  function endCall(c, reason) {
    if (c.ended) return;
    release(c);
    status.endedReason = reason;
    setState("ended", `Call ended: ${reason}.`);
  }

  function release(c) {
    c.ended = true;
    if (call === c) call = null;
    status.botSpeaking = false;
    status.speaking = false;
    if (c.ws && c.ws.readyState <= WebSocket.OPEN) c.ws.close(1000);
    if (c.capture) c.capture.port.postMessage({ type: "close" });
    if (c.playback) c.playback.port.postMessage({ type: "close" });
    if (c.stream) for (const track of c.stream.getTracks()) track.stop();
    if (c.ctx && c.ctx.state !== "closed") c.ctx.close().catch(() => {});
    ui.level.value = 0;
    setInCall(false);
  }

  function hangUp() {
    const c = call;
    if (!c) return;
    c.hungUp = true;
    sendJson(c, { type: "hangup" });
    endCall(c, "you hung up");
  }

  function pressKey(key) {
    const c = call;
    if (!c || !KEYS.includes(key) || !c.ws || c.ws.readyState !== WebSocket.OPEN) return;
    sendJson(c, { type: "dtmf", digits: key });
    status.dtmfSent += key;
  }

  // -- start -----------------------------------------------------------------------------------------------------

  ui.call.addEventListener("click", () => startCall());
  ui.hangup.addEventListener("click", hangUp);
  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!call) startCall();
  });
  for (const button of ui.keys) button.addEventListener("click", () => pressKey(button.dataset.key));
  document.addEventListener("keydown", (event) => { // typing a digit during a call presses it
    if (!call || event.ctrlKey || event.metaKey || event.altKey || event.target instanceof HTMLInputElement) return;
    if (KEYS.includes(event.key) && event.key.length === 1) pressKey(event.key);
  });

  (async () => {
    try {
      const response = await fetch("/phone/config", { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      config = await response.json();
    } catch (err) {
      showError(`The web phone is not available (${err.message}).`);
      setState("idle", "Unavailable.");
      return;
    }
    status.keyRequired = Boolean(config.key_required);
    ui.keyForm.hidden = !config.key_required;
    ui.call.disabled = false;
    setState("idle", config.key_required ? "Enter the access key and press Call." : "Press Call to talk to the agent.");
  })();
})();
