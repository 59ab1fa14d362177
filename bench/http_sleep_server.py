#!/usr/bin/env python3
"""A fixed-latency HTTP endpoint for bench/http.sh, on 127.0.0.1.

    python3 bench/http_sleep_server.py PORT_FILE

binds 127.0.0.1 on a free port, writes the port number to PORT_FILE and
serves until killed.  One asyncio event loop, HTTP/1.1 keep-alive, no
thread per request, so that at hundreds of requests in flight the server
itself is not the bottleneck (test/http_server.py starts a thread for
every connection).  Endpoints (any method, request body read and ignored):

  /sleep?ms=N   waits N ms (default 100), then 200 {"ok": true}; counts
                requests and the current and peak number of requests
                waiting at the same time
  /stats        JSON: requests (of /sleep), current, peak
  /reset        clears the counters

Standard library only.
"""
import asyncio
import json
import os
import sys
import urllib.parse

state = {"requests": 0, "current": 0, "peak": 0}


def response(status, body):
    data = body.encode()
    reason = {200: "OK", 404: "Not Found", 400: "Bad Request"}[status]
    return (("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
             "Content-Length: %d\r\n\r\n") % (status, reason, len(data))).encode() + data


async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) < 3:
                writer.write(response(400, '{"error": "bad request line"}'))
                break
            length = 0
            close = parts[2] == "HTTP/1.0"
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "connection":
                    close = value.strip().lower() == "close"
            if length:
                await reader.readexactly(length)
            url = urllib.parse.urlsplit(parts[1])
            args = dict(urllib.parse.parse_qsl(url.query))
            if url.path == "/sleep":
                state["requests"] += 1
                state["current"] += 1
                state["peak"] = max(state["peak"], state["current"])
                try:
                    await asyncio.sleep(int(args.get("ms", "100")) / 1000.0)
                finally:
                    state["current"] -= 1
                writer.write(response(200, '{"ok": true}'))
            elif url.path == "/stats":
                writer.write(response(200, json.dumps(state)))
            elif url.path == "/reset":
                state.update(requests=0, current=0, peak=0)
                writer.write(response(200, '{"ok": true}'))
            else:
                writer.write(response(404, '{"error": "no such endpoint"}'))
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(port_file):
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(port_file + ".tmp", port_file)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
