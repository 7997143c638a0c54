"""Speech recognition for the offline stand-in in a dedicated child process, off the event loop.

Why a process and not a thread (measured on the 2-core development box, a 2.8 s caller turn, phrase model):
pocketsphinx keeps the GIL while it decodes. Decoding takes 140-170 ms; run in a worker thread it still
stalled a 1 ms ticker on the event loop by 107-174 ms (on the loop: 141-170 ms), and building a phrase
model (60 ms) stalled it by 18-40 ms. espeak-ng, called through ctypes, releases the GIL: synthesis in a
thread stalls the loop 3-6 ms (12 ms on the loop), so text-to-speech stays in a thread.

:class:`AsrWorker` runs ``python -m callbot.local.speech.asr_worker`` and talks to it over its stdin/stdout pipes
with asyncio streams, so nothing on the loop ever waits for it. The child is sequential: it answers in the
order it was asked, which keeps every session's transcripts in turn order. It builds and caches the phrase
models itself (:data:`MAX_CACHED_RECOGNIZERS`). A child that dies fails only the requests it held; the next
request starts a new one. ``stop()`` terminates the child (killed after 2 s): shutdown never waits for a
decode to finish.

Wire format, big-endian: request ``id u32, sample_rate u32, len(phrases) u32, len(audio) u32``, then the
phrases as a JSON list (``null``: the generic model) and the 16-bit PCM; reply ``id u32, ok u8, len u32``
and the UTF-8 transcript (or, when not ok, the error's text).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import struct
import sys
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import orjson

log = logging.getLogger(__name__)

MAX_CACHED_RECOGNIZERS = 8
STOP_GRACE_S = 2.0
_REQUEST = struct.Struct(">IIII")
_REPLY = struct.Struct(">IBI")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # holds the callbot package the child must import


class AsrError(RuntimeError):
    """A transcription failed (bad input, a model that cannot be built) or the worker process exited."""


class _Child:
    """One worker process, the requests waiting for its replies, and the task reading them."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pending: dict[int, asyncio.Future[str]] = {}
        self.reader: asyncio.Task[None] | None = None


class AsrWorker:
    """Async client of the recognition process; one per stand-in. See the module docstring."""

    def __init__(self) -> None:
        self._child: _Child | None = None
        self._starting = asyncio.Lock()
        self._next_id = 0
        self._stopping = False

    @property
    def pid(self) -> int | None:
        """The worker's process id while it runs."""
        return self._child.proc.pid if self._child is not None else None

    async def start(self) -> None:
        """Start the worker process now (else the first request does)."""
        await self._running()

    async def transcribe(self, phrases: Sequence[str] | None, pcm16: bytes, sample_rate: int) -> str:
        """Recognise one utterance (see :meth:`callbot.local.speech.asr.Recognizer.transcribe`) with the phrase model
        of ``phrases`` (``None``: the generic model). Raises :class:`AsrError`."""
        if not 0 < sample_rate < 2**32:
            raise AsrError(f"sample_rate must be positive, got {sample_rate}")
        child = await self._running()
        stdin = child.proc.stdin
        assert stdin is not None
        self._next_id = (self._next_id + 1) % 2**32
        request_id = self._next_id
        names = orjson.dumps(None if phrases is None else list(phrases))
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        child.pending[request_id] = future
        try:
            # one write() call queues the whole request: a cancelled caller never leaves half a request behind
            stdin.write(_REQUEST.pack(request_id, sample_rate, len(names), len(pcm16)) + names + pcm16)
            await stdin.drain()
            return await future
        except (BrokenPipeError, ConnectionResetError) as exc:  # it died before it had read the request
            self._forget(child)  # the next request starts another, even before the reader has seen the end
            raise _exited(child) from exc
        finally:
            child.pending.pop(request_id, None)

    async def stop(self) -> None:
        """Terminate the worker (killed after :data:`STOP_GRACE_S`); requests in flight fail."""
        self._stopping = True
        child, self._child = self._child, None
        if child is None:
            return
        with contextlib.suppress(ProcessLookupError):
            child.proc.terminate()
        try:
            async with asyncio.timeout(STOP_GRACE_S):
                await child.proc.wait()
        except TimeoutError:
            log.warning("speech recognition worker %d did not stop within %.0f s: killed", child.proc.pid,
                        STOP_GRACE_S)  # fmt: skip
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
            await child.proc.wait()
        if child.reader is not None:
            await child.reader

    async def _running(self) -> _Child:
        async with self._starting:
            if self._child is not None and self._child.proc.returncode is None:
                return self._child
            self._stopping = False
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "callbot.local.speech.asr_worker", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            child = _Child(proc)
            child.reader = asyncio.get_running_loop().create_task(self._read(child))
            self._child = child
            log.debug("speech recognition worker %d started", proc.pid)
            return child

    async def _read(self, child: _Child) -> None:
        stdout = child.proc.stdout
        assert stdout is not None
        try:
            while True:
                request_id, ok, size = _REPLY.unpack(await stdout.readexactly(_REPLY.size))
                text = (await stdout.readexactly(size)).decode("utf-8", "replace")
                future = child.pending.pop(request_id, None)
                if future is None or future.done():
                    continue  # its caller was cancelled
                if ok:
                    future.set_result(text)
                else:
                    future.set_exception(AsrError(text))
        except asyncio.IncompleteReadError:  # the child exited
            code = await child.proc.wait()
            if not self._stopping:
                log.warning("speech recognition worker %d exited (code %s); the next request starts another",
                            child.proc.pid, code)  # fmt: skip
        finally:
            self._forget(child)
            for future in child.pending.values():
                if not future.done():
                    future.set_exception(_exited(child))
            child.pending.clear()

    def _forget(self, child: _Child) -> None:
        """``child`` has exited: the next request starts another worker."""
        if self._child is child:
            self._child = None


def _exited(child: _Child) -> AsrError:
    """What a request fails with when its worker exits, wherever that is noticed (writing it, or awaiting it)."""
    return AsrError(f"the speech recognition worker {child.proc.pid} exited")


# -- the child process -------------------------------------------------------------------------------------------


def _read_exact(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size) if size else b""
    return data if len(data) == size else None


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """The child's loop: answer requests until ``requests`` ends. Blocking; runs in the worker process."""
    from callbot.local.speech.asr import Recognizer

    recognizers: OrderedDict[tuple[str, ...] | None, Recognizer] = OrderedDict()
    while (head := _read_exact(requests, _REQUEST.size)) is not None:
        request_id, sample_rate, names_size, audio_size = _REQUEST.unpack(head)
        names = _read_exact(requests, names_size)
        audio = _read_exact(requests, audio_size)
        if names is None or audio is None:
            return
        try:
            decoded = orjson.loads(names)
            key = None if decoded is None else tuple(str(p) for p in decoded)
            recognizer = recognizers.get(key)
            if recognizer is None:
                recognizer = Recognizer(key)
                recognizers[key] = recognizer
                while len(recognizers) > MAX_CACHED_RECOGNIZERS:
                    recognizers.popitem(last=False)
            recognizers.move_to_end(key)
            reply, ok = recognizer.transcribe(audio, sample_rate), True
        except (ValueError, RuntimeError, OSError) as exc:  # bad phrases or audio: fail this request only
            reply, ok = f"{type(exc).__name__}: {exc}", False
        data = reply.encode("utf-8")
        replies.write(_REPLY.pack(request_id, ok, len(data)) + data)
        replies.flush()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints of C libraries must not corrupt replies
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
