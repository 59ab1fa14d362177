#!/usr/bin/env python3
"""A small HTTP server on 127.0.0.1 for batchflow's HTTP activity tests
and benchmarks.  Standard library only.

    python3 test/http_server.py PORT_FILE

binds 127.0.0.1 on a free port, writes the port number to PORT_FILE and
serves until killed.  Endpoints (any method):

  /echo                 200, JSON: method, path, query, args, headers, body
  /sleep?ms=N           waits N ms, then 200 {"ok": true}; counts concurrency
  /hang?ms=N            waits up to N ms, counted in concurrency, watching the
                        connection: if the client closes it first, counts it
                        in "closed" and answers nothing; else 200
  /flaky?id=X&fails=N[&ms=M]
                        500 for the first N requests with that id, then 200;
                        with ms, waits M ms first and counts concurrency
  /status/NNN           that status, text body "status NNN"
  /retry-after?id=X&s=S first request per id: 429 with Retry-After: S; then 200
  /big?kb=N             200, N kB of text/plain
  /json?n=X | ?s=X | ?depth=N
                        200, application/json, raw: {"n": X} (X as given),
                        {"s": "X"} (X's escapes as given), or N nested arrays
  /text                 200, text/plain "hello"
  /redirect?to=URL      302 to URL
  /stats                JSON: requests, peak and current concurrency of /sleep
                        and /hang, connections closed by the client in /hang,
                        (and of /flaky with ms),
                        count per path, idempotency keys seen (key -> count),
                        per-id request times of /retry-after
  /reset                clears the counters
"""
import json
import select
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
state = {}


def reset():
    with lock:
        state.clear()
        state.update(requests=0, current=0, peak=0, paths={}, keys={},
                     flaky={}, retry={}, times={}, closed=0)


reset()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The headers and the body go out in two writes: without TCP_NODELAY,
    # Nagle holds the body back until the client's delayed ACK of the
    # headers, up to 40 ms per request on a keep-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body, ctype="application/json", headers=None):
        data = body if isinstance(body, bytes) else body.encode()
        if status in (204, 304):
            data = b""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def hold(self, ms):
        """Wait ms milliseconds, counted in current and peak concurrency."""
        with lock:
            state["current"] += 1
            state["peak"] = max(state["peak"], state["current"])
        try:
            time.sleep(ms / 1000.0)
        finally:
            with lock:
                state["current"] -= 1

    def hang(self, ms):
        """Wait up to ms milliseconds for the client to close the
        connection; True (and counted in closed) if it did."""
        with lock:
            state["current"] += 1
            state["peak"] = max(state["peak"], state["current"])
        deadline = time.time() + ms / 1000.0
        try:
            while time.time() < deadline:
                ready, _, _ = select.select([self.connection], [], [], 0.05)
                if not ready:
                    continue
                try:
                    data = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    data = b""
                if not data:
                    with lock:
                        state["closed"] += 1
                    self.close_connection = True
                    return True
                time.sleep(0.05)
            return False
        finally:
            with lock:
                state["current"] -= 1

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        args = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        key = self.headers.get("Idempotency-Key")
        with lock:
            state["requests"] += 1
            state["paths"][url.path] = state["paths"].get(url.path, 0) + 1
            if key:
                state["keys"][key] = state["keys"].get(key, 0) + 1

        p = urllib.parse.unquote(url.path)
        if p == "/echo":
            self.reply(200, json.dumps({
                "method": self.command, "path": p, "query": url.query,
                "args": args,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace")}))
        elif p == "/sleep":
            self.hold(int(args.get("ms", "100")))
            self.reply(200, '{"ok": true}')
        elif p == "/hang":
            if not self.hang(int(args.get("ms", "30000"))):
                self.reply(200, '{"ok": true}')
        elif p == "/flaky":
            if "ms" in args:
                self.hold(int(args["ms"]))
            ident = args.get("id", "")
            with lock:
                n = state["flaky"].get(ident, 0) + 1
                state["flaky"][ident] = n
            if n <= int(args.get("fails", "1")):
                self.reply(500, "flaky failure %d of %s" % (n, ident), "text/plain")
            else:
                self.reply(200, json.dumps({"id": ident, "attempt": n}))
        elif p.startswith("/status/"):
            code = int(p.split("/")[2])
            self.reply(code, "status %d" % code, "text/plain")
        elif p == "/retry-after":
            ident = args.get("id", "")
            with lock:
                n = state["retry"].get(ident, 0) + 1
                state["retry"][ident] = n
                state["times"].setdefault(ident, []).append(time.time())
            if n == 1:
                self.reply(429, "slow down", "text/plain",
                           {"Retry-After": args.get("s", "1")})
            else:
                self.reply(200, json.dumps({"id": ident, "attempt": n}))
        elif p == "/big":
            self.reply(200, "x" * (int(args.get("kb", "1")) * 1024), "text/plain")
        elif p == "/json":
            # Raw JSON text, sent as application/json: {"n": <n>} with the
            # number as given, {"s": "<s>"} with the string's escapes as
            # given, or <depth> nested arrays.
            if "n" in args:
                self.reply(200, '{"n": %s}' % args["n"])
            elif "s" in args:
                self.reply(200, '{"s": "%s"}' % args["s"])
            else:
                d = int(args.get("depth", "1"))
                self.reply(200, "[" * d + "]" * d)
        elif p == "/text":
            self.reply(200, "hello", "text/plain")
        elif p == "/redirect":
            self.reply(302, "", "text/plain", {"Location": args.get("to", "/text")})
        elif p == "/stats":
            with lock:
                self.reply(200, json.dumps(state))
        elif p == "/reset":
            reset()
            self.reply(200, '{"ok": true}')
        else:
            self.reply(404, "no such endpoint", "text/plain")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main():
    server = Server(("127.0.0.1", 0), Handler)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
