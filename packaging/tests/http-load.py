#!/usr/bin/env python3
"""HTTP/1.1 load for packaging/tests/deb-upgrade.sh, loopback only.

Threads send GET requests, half on keep-alive connections, half with a
new connection per request (Connection: close), and count each request
that got a whole 200 response (status line, headers, Content-Length bytes
of body) as ok and anything else (refused, reset, closed early, short
body, other status, timeout) as failed. A keep-alive connection the
server closes after a response that said "Connection: close" is reopened
for the next request; that is not a failure.

Bounded: it stops when STOP_FILE exists, after --max-seconds, or after
--max-requests. Every 100 ms it writes "OK_KEEP OK_CLOSE FAILED" to
PROGRESS_FILE (atomically), so a caller can wait for traffic instead of
sleeping. Last line on stdout: "ok N failed N".
"""

import argparse
import os
import socket
import threading
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--path", default="/")
    ap.add_argument("--threads", type=int, default=2, help="per mode")
    ap.add_argument("--max-seconds", type=float, default=120)
    ap.add_argument("--max-requests", type=int, default=2_000_000)
    ap.add_argument("--progress", required=True)
    ap.add_argument("--stop", required=True)
    a = ap.parse_args()
    if not a.host.startswith("127.") and a.host != "::1":
        raise SystemExit("http-load.py: loopback only")

    lock = threading.Lock()
    counts = {"keep": 0, "close": 0, "failed": 0, "conns": 0}
    errors = []
    deadline = time.monotonic() + a.max_seconds
    done = threading.Event()
    req = lambda close: (
        f"GET {a.path} HTTP/1.1\r\nHost: localhost\r\n"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    ).encode()

    def total():
        return counts["keep"] + counts["close"] + counts["failed"]

    def fetch(s, close):
        """One exchange on s; returns whether the server keeps s open."""
        s.sendall(req(close))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                raise OSError("connection closed before the response head")
            data += chunk
            if len(data) > 65536:
                raise OSError("response head too long")
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ")
        if len(status) < 2 or status[1] != b"200":
            raise OSError(f"status line {lines[0][:60]!r}")
        fields = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            fields[k.strip().lower()] = v.strip()
        if b"content-length" not in fields:
            raise OSError("no Content-Length")
        n = int(fields[b"content-length"])
        while len(body) < n:
            chunk = s.recv(65536)
            if not chunk:
                raise OSError(f"body cut at {len(body)} of {n} bytes")
            body += chunk
        return fields.get(b"connection", b"").lower() != b"close"

    def worker(close):
        s = None
        while not done.is_set():
            with lock:
                if total() >= a.max_requests:
                    done.set()
                    break
            try:
                if s is None:
                    s = socket.create_connection((a.host, a.port), timeout=10)
                    with lock:
                        counts["conns"] += 1
                keep = fetch(s, close)
                with lock:
                    counts["close" if close else "keep"] += 1
                if close or not keep:
                    s.close()
                    s = None
            except (OSError, ValueError) as e:
                with lock:
                    counts["failed"] += 1
                    if len(errors) < 10:
                        errors.append(f"{time.strftime('%H:%M:%S')} {'close' if close else 'keep-alive'}: {e}")
                if s is not None:
                    s.close()
                s = None
                # Not a busy loop against a port that refuses: every
                # failure is counted all the same.
                time.sleep(0.001)

    threads = [threading.Thread(target=worker, args=(m,)) for m in [False] * a.threads + [True] * a.threads]
    for t in threads:
        t.start()
    start = time.monotonic()
    while not done.is_set():
        if os.path.exists(a.stop) or time.monotonic() > deadline:
            done.set()
            break
        with lock:
            line = f"{counts['keep']} {counts['close']} {counts['failed']}\n"
        with open(a.progress + ".tmp", "w") as f:
            f.write(line)
        os.replace(a.progress + ".tmp", a.progress)
        time.sleep(0.1)
    for t in threads:
        t.join()
    secs = time.monotonic() - start
    ok = counts["keep"] + counts["close"]
    print(f"keep-alive ok {counts['keep']}, connection-per-request ok {counts['close']}, "
          f"{counts['conns']} connections, {secs:.1f} s")
    for e in errors:
        print(f"error: {e}")
    print(f"ok {ok} failed {counts['failed']}")


if __name__ == "__main__":
    main()
