"""Append blob or staged blocks for recordings: client CPU and requests per call-minute, measured.

    AZURE_STORAGE_CONNECTION_STRING=... python -m callbot.benchmark.blob_sink --url http://127.0.0.1:10000/devstoreaccount1/bench

Writes `--calls` recordings of `--seconds` each at a recording's real byte rate (`--rate` KiB/s; a pcm24k call
with both parties speaking records about 150 KiB/s, pcm16k 100: every audio message is on two wires), in batches
every `--flush` seconds, once as append blobs (one `append_block` per batch) and once as block blobs (one
`stage_block` per batch, one `commit_block_list` at the end), interleaved (ABAB). Reports this process's CPU per
recorded call-minute and the requests made. Against Azurite the server's work is not counted (its own process).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import time
import uuid

from callbot.recording_store import CONNECTION_STRING_ENV, BlobStore


async def _append(store: BlobStore, name: str, batches: list[bytes]) -> int:
    sink = store.sink(name)
    for batch in batches:
        await sink.write(batch)
    return len(batches) + 1


async def _blocks(store: BlobStore, name: str, batches: list[bytes]) -> int:
    blob = store.container.get_blob_client(name)
    ids = []
    for batch in batches:
        block_id = base64.b64encode(uuid.uuid4().bytes).decode()
        await blob.stage_block(block_id, batch)
        ids.append(block_id)
    await blob.commit_block_list(ids)
    return len(batches) + 1


async def measure(url: str, connection_string: str, calls: int, seconds: float, rate_kib: float, flush_s: float,
                  pairs: int) -> list[tuple[str, float, int]]:
    store = BlobStore(url, connection_string)
    await store.ensure_container()
    batch = os.urandom(int(rate_kib * 1024 * flush_s))
    batches = [batch] * max(1, round(seconds / flush_s))
    results = []
    try:
        for pair in range(pairs):
            for label, method in (("append blob", _append), ("staged blocks", _blocks)):
                cpu0 = time.process_time()
                requests = sum(await asyncio.gather(*(method(store, f"{label[:5]}-{pair}-{i}", batches)
                                                      for i in range(calls))))
                cpu = time.process_time() - cpu0
                results.append((label, cpu * 1000 / (calls * seconds / 60), requests))
    finally:
        await store.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m callbot.benchmark.blob_sink", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="a container URL (Azurite or Azure)")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=150.0, help="recording bytes per call-second, KiB")
    parser.add_argument("--flush", type=float, default=2.0, help="seconds between batches")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args(argv)
    connection_string = os.environ.get(CONNECTION_STRING_ENV, "")
    results = asyncio.run(measure(args.url, connection_string, args.calls, args.seconds, args.rate, args.flush,
                                  args.pairs))
    sys.stdout.write(f"{args.calls} calls x {args.seconds:.0f} s at {args.rate:.0f} KiB/s, a batch every "
                     f"{args.flush:g} s\n")
    for label, cpu_ms, requests in results:
        sys.stdout.write(f"  {label:14s} {cpu_ms:7.1f} ms client CPU per call-minute, {requests} requests\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
