#!/usr/bin/env python3
"""Measure an HTTP endpoint alone, without batchflow: N GET requests, CAP at
a time, over CAP keep-alive connections (bench/http.sh uses it to check
that the server is not the bottleneck before it measures batchflow).

    python3 bench/http_load.py URL N CAP

prints one line: "requests N cap CAP seconds S rate R" (R in requests/s).
Only for 127.0.0.1 servers started by the benchmark; standard library only.
"""
import asyncio
import sys
import time
import urllib.parse


async def worker(host, port, target, count, failures):
    reader, writer = await asyncio.open_connection(host, port)
    request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (target, host, port)).encode()
    try:
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            if lines[0].split(" ")[1] != "200":
                failures.append(lines[0])
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
    finally:
        writer.close()


async def main(url, n, cap):
    u = urllib.parse.urlsplit(url)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("http_load.py only loads servers on this machine")
    target = u.path + ("?" + u.query if u.query else "")
    failures = []
    counts = [n // cap + (1 if i < n % cap else 0) for i in range(cap)]
    start = time.monotonic()
    await asyncio.gather(*(worker(u.hostname, u.port, target, c, failures)
                           for c in counts if c > 0))
    seconds = time.monotonic() - start
    if failures:
        sys.exit("%d requests failed, e.g. %s" % (len(failures), failures[0]))
    print("requests %d cap %d seconds %.3f rate %.1f" % (n, cap, seconds, n / seconds))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
