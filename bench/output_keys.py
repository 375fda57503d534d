"""Reading an S3 tag output's keys: what every ``tag`` run into an existing ``--out`` does twice.

A run reads the ``file_id`` of every earlier row before it starts (resume) and the ``path`` and
``tagged_at`` of every row when it commits (one row per path). On S3 each part costs round trips
(footer, then columns) more than bytes, so the output is read 16 parts at a time. This writes an
output of ``--parts`` parts to a moto S3 server on loopback, reached through a proxy that holds each
request for ``--latency`` seconds (a round trip to a real store), and times, in the same process,
the loop a user writes (each part's column with ``pyarrow.parquet.read_table``, one after another)
against ``output.completed_file_ids``, and ``ResultWriter.drop_superseded``.

    python bench/output_keys.py [--parts 100] [--rows 200] [--latency 0.03]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime

import pyarrow.parquet as pq


def _start_delay_proxy(listen: int, target: int, latency_s: float) -> None:
    """Forward loopback port ``listen`` to ``target``, holding every client read for ``latency_s``."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lag: float) -> None:
        try:
            while data := await reader.read(65536):
                await asyncio.sleep(lag)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pipe(client_reader, server_writer, latency_s), pipe(server_reader, client_writer, 0.0))

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", listen)
        async with server:
            await server.serve_forever()

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=int, default=100)
    parser.add_argument("--rows", type=int, default=200, help="rows per part")
    parser.add_argument("--latency", type=float, default=0.03, help="seconds added to each request")
    args = parser.parse_args()

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    import s3fs
    from moto.server import ThreadedMotoServer

    from mirbatch.output import ResultWriter, completed_file_ids
    from mirbatch.sources import S3Options

    moto_port, proxy_port = _free_port(), _free_port()
    moto = ThreadedMotoServer(port=moto_port, verbose=False)
    moto.start()
    _start_delay_proxy(proxy_port, moto_port, args.latency)
    s3 = S3Options(f"http://127.0.0.1:{proxy_port}")
    fs = s3fs.S3FileSystem(**s3.storage_options())
    fs.mkdir("bench")
    out = "s3://bench/labels"
    writer = ResultWriter(out, rows_per_part=args.rows, flush_s=1e9, s3=s3)
    for i in range(args.parts * args.rows):
        row = {"path": f"s3://archive/{i:08d}.wav", "status": "ok", "file_id": f"{i:032x}"}
        writer.add({**row, "label": "piano", "confidence": 0.9, "tagged_at": datetime.now(UTC)})
    writer.flush()
    parts = sorted(fs.glob("bench/labels/part-*.parquet"))

    started = time.perf_counter()
    loop_ids = set()
    for part in parts:
        with fs.open(part, "rb") as f:
            loop_ids.update(pq.read_table(f, columns=["file_id"]).column("file_id").to_pylist())
    loop_s = time.perf_counter() - started
    started = time.perf_counter()
    ids = completed_file_ids(out, s3)
    ours_s = time.perf_counter() - started
    assert ids == loop_ids and len(ids) == args.parts * args.rows
    started = time.perf_counter()
    dropped = ResultWriter(out, s3=s3).drop_superseded()
    commit_s = time.perf_counter() - started
    moto.stop()

    print(f"{args.parts} parts of {args.rows} rows on S3 (moto on loopback, {args.latency * 1000:.0f} ms per request)")
    print(f"  users' loop, file_id part by part : {loop_s:6.2f} s   1.00x")
    print(f"  output.completed_file_ids         : {ours_s:6.2f} s   {loop_s / ours_s:.2f}x")
    print(f"  ResultWriter.drop_superseded      : {commit_s:6.2f} s   ({dropped} rows dropped)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    main()
