"""Idle keep-alive clients for bench/run.sh's `idle` scenario.

    python3 bench/idle_clients.py HOST PORT N

Opens N HTTP/1.1 connections to HOST:PORT, makes one GET on each and reads
its answer whole (Content-Length), then keeps every connection open and
silent. Prints one line, `ready OK FAILED`, once all have answered, then
waits for stdin to close (or SIGTERM) before closing them. Connections are
opened 200 at a time so that the proxy's accept queue never overflows.
"""

import asyncio
import resource
import sys


async def one(host, port, conns, failures):
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            failures.append(head.split(b"\r\n", 1)[0])
        conns.append(writer)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
        failures.append(repr(e))


async def main(host, port, n):
    conns, failures = [], []
    for start in range(0, n, 200):
        await asyncio.gather(*(one(host, port, conns, failures) for _ in range(start, min(n, start + 200))))
    print(f"ready {len(conns)} {len(failures)}", flush=True)
    if failures:
        print(f"first failure: {failures[0]}", file=sys.stderr, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for w in conns:
        w.close()


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
