#!/usr/bin/env python3
"""Open N keep-alive connections to 127.0.0.1:PORT, one GET each, then hold them idle.

Usage: idle_conns.py PORT N PATH READY_FILE HOLD_SECONDS

Each connection sends one `GET PATH HTTP/1.1` and reads the whole response (so the proxy
has served a request on it and keeps it as an idle keep-alive connection). At most 32
connections are being opened at a time (like wrk -c32: the proxy's upstream pool stays
small). When all are open, writes "open=N failed=M" to READY_FILE, holds them for
HOLD_SECONDS, counts how many the proxy closed meanwhile, closes all and prints a summary.
Bounded: every connect/read has a 10 s timeout; the script never runs longer than
HOLD_SECONDS + about N/100 seconds.
"""
import asyncio
import sys

CONCURRENCY = 32
TIMEOUT = 10.0


async def open_one(port, path, sem, conns, failures):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
        except (OSError, asyncio.TimeoutError) as e:
            failures.append(f"connect: {e!r}")
            return
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            status = head.split(b" ", 2)[1]
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
            if status != b"200":
                raise ValueError(f"status {status!r}")
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            failures.append(f"request: {e!r}")
            writer.close()
            return
        conns.append((reader, writer))


async def main():
    port, n, path, ready_file, hold = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
    sem = asyncio.Semaphore(CONCURRENCY)
    conns, failures = [], []
    await asyncio.gather(*(open_one(port, path, sem, conns, failures) for _ in range(n)))
    with open(ready_file, "w") as f:
        f.write(f"open={len(conns)} failed={len(failures)}\n")
    await asyncio.sleep(hold)
    closed_by_proxy = sum(1 for r, _ in conns if r.at_eof())
    for _, w in conns:
        w.close()
    print(f"open={len(conns)} failed={len(failures)} closed_by_proxy_during_hold={closed_by_proxy}")
    if failures:
        print("first failures:", *failures[:5], sep="\n  ")


if __name__ == "__main__":
    asyncio.run(main())
