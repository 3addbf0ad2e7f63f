#!/usr/bin/env python3
"""HTTP/2 client for Baton's end-to-end tests (tests/http2*.rs).

Legitimate clients use the `h2` package (PyPI); attacks write raw frames,
so that nothing in a client library smooths them over. Every mode prints
one JSON object on stdout (and, for `hold`, "READY" first); the Rust
tests decide what it must say.

usage: h2tool.py [--tls] [--alpn LIST] PORT MODE [ARGS...]
"""

import hashlib
import json
import socket
import ssl
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)


def connect(port, tls, alpn=("h2",)):
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    if not tls:
        return sock, None
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    s = ctx.wrap_socket(sock, server_hostname="localhost")
    return s, s.selected_alpn_protocol()


def frame(kind, flags, sid, payload=b""):
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, kind, flags, sid) + payload


def request_headers(path, authority="localhost", tls=True, method="GET", extra=()):
    return [
        (":method", method),
        (":path", path),
        (":scheme", "https" if tls else "http"),
        (":authority", authority),
    ] + list(extra)


class Reader:
    """Reads raw frames from the server, with a deadline."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.closed = False

    def frames(self, deadline):
        while True:
            while len(self.buf) >= 9:
                n = (self.buf[0] << 16) | (self.buf[1] << 8) | self.buf[2]
                if len(self.buf) < 9 + n:
                    break
                kind, flags, sid = self.buf[3], self.buf[4], struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF
                payload = self.buf[9 : 9 + n]
                self.buf = self.buf[9 + n :]
                yield kind, flags, sid, payload
            if self.closed or time.time() > deadline:
                return
            self.sock.settimeout(max(0.05, deadline - time.time()))
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                return
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
                self.closed = True
                return
            if not data:
                self.closed = True
                return
            self.buf += data


def watch(sock, seconds=10, stop_on_goaway=False):
    """What the server does: GOAWAY codes, resets, responses, close."""
    r = Reader(sock)
    seen = {"goaway": [], "rst": {}, "headers": [], "data": 0, "closed": False, "settings": {}}
    deadline = time.time() + seconds
    for kind, flags, sid, payload in r.frames(deadline):
        if kind == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            seen["goaway"].append({"last": last & 0x7FFFFFFF, "code": code})
        elif kind == RST_STREAM:
            seen["rst"][sid] = struct.unpack(">I", payload[:4])[0]
        elif kind == HEADERS:
            seen["headers"].append(sid)
        elif kind == DATA:
            seen["data"] += len(payload)
        elif kind == SETTINGS and not flags & 1:
            for i in range(0, len(payload), 6):
                ident, value = struct.unpack(">HI", payload[i : i + 6])
                seen["settings"][str(ident)] = value
        elif kind == PING and not flags & 1:
            try:
                sock.sendall(frame(PING, 1, 0, payload))
            except OSError:
                pass
    seen["closed"] = r.closed
    return seen


def raw_start(port, tls, settings=b""):
    sock, _ = connect(port, tls)
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings))
    return sock


def send_all(sock, data):
    """Sends what the server takes: a flood may be cut off by its GOAWAY."""
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


class Client:
    """A legitimate client (the h2 package)."""

    def __init__(self, port, tls, window=None, authority="localhost", alpn=("h2",)):
        self.sock, self.alpn = connect(port, tls, alpn)
        self.tls = tls
        self.authority = authority
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=cfg)
        settings = {}
        if window is not None:
            settings[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] = window
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.flush()
        self.streams = {}
        self.goaways = []
        self.closed = False

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, method="GET", extra=()):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, request_headers(path, self.authority, self.tls, method, extra), end_stream=True)
        self.streams[sid] = {"path": path, "status": None, "headers": {}, "body": bytearray(), "done": False, "reset": None}
        self.flush()
        return sid

    def pump(self, timeout=20, until=None, ack=True):
        """Reads and handles events until `until()` or all streams end."""
        deadline = time.time() + timeout
        until = until or (lambda: all(s["done"] or s["reset"] is not None for s in self.streams.values()))
        while not until():
            if self.closed or time.time() > deadline:
                return False
            self.sock.settimeout(max(0.05, deadline - time.time()))
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                continue
            except (ConnectionResetError, ssl.SSLError, OSError):
                self.closed = True
                continue
            if not data:
                self.closed = True
                continue
            self.feed(data, ack)
        return True

    def feed(self, data, ack=True):
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.InformationalResponseReceived):
                s = self.streams[ev.stream_id]
                s.setdefault("interim", []).append(int(dict(ev.headers)[":status"]))
            elif isinstance(ev, h2.events.ResponseReceived):
                s = self.streams[ev.stream_id]
                s["headers"] = dict(ev.headers)
                s["status"] = int(s["headers"][":status"])
            elif isinstance(ev, h2.events.DataReceived):
                self.streams[ev.stream_id]["body"] += ev.data
                if ack:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.streams[ev.stream_id]["done"] = True
            elif isinstance(ev, h2.events.StreamReset):
                self.streams[ev.stream_id]["reset"] = int(ev.error_code)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaways.append({"last": ev.last_stream_id, "code": int(ev.error_code)})
        try:
            self.flush()
        except OSError:
            self.closed = True

    def results(self):
        out = []
        for sid, s in sorted(self.streams.items()):
            out.append({
                "sid": sid,
                "path": s["path"],
                "status": s["status"],
                "headers": s["headers"],
                "len": len(s["body"]),
                "sha256": hashlib.sha256(bytes(s["body"])).hexdigest(),
                "body": bytes(s["body"][:200]).decode("latin-1"),
                "done": s["done"],
                "reset": s["reset"],
                "interim": s.get("interim", []),
            })
        return {"alpn": self.alpn, "streams": out, "goaways": self.goaways, "closed": self.closed}



class RawClient:
    """A client of raw frames for what the h2 package refuses to do: go
    on reading the streams a GOAWAY left open (a graceful shutdown's
    streams finish after it)."""

    def __init__(self, port, tls, window):
        self.sock = raw_start(port, tls, struct.pack(">HI", 4, window))
        self.tls = tls
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.reader = Reader(self.sock)
        self.streams = {}
        self.goaways = []
        self.next_id = 1
        self.settings = {}
        self.settings_seen = False

    def request(self, path):
        return self.open(path, request_headers(path, tls=self.tls), True)

    def open(self, path, headers, end):
        """A stream with `headers`; `end`: no body follows."""
        sid = self.next_id
        self.next_id += 2
        block = self.enc.encode(headers)
        self.sock.sendall(frame(HEADERS, 0x5 if end else 0x4, sid, block))
        self.streams[sid] = {"path": path, "status": None, "headers": {}, "body": bytearray(), "done": False, "reset": None}
        return sid

    def open_windows(self):
        out = frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**30))
        for sid in self.streams:
            out += frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", 2**30))
        self.sock.sendall(out)

    def pump(self, until, timeout):
        deadline = time.time() + timeout
        while not until() and not self.reader.closed and time.time() < deadline:
            for kind, flags, sid, payload in self.reader.frames(min(deadline, time.time() + 0.5)):
                self.handle(kind, flags, sid, payload)
                if until():
                    return

    def handle(self, kind, flags, sid, payload):
        s = self.streams.get(sid)
        out = b""
        if kind == SETTINGS and not flags & 1:
            for i in range(0, len(payload) - 5, 6):
                key, value = struct.unpack(">HI", payload[i:i + 6])
                self.settings[key] = value
            self.settings_seen = True
            out = frame(SETTINGS, 1, 0)
        elif kind == PING and not flags & 1:
            out = frame(PING, 1, 0, payload)
        elif kind == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self.goaways.append({"last": last & 0x7FFFFFFF, "code": code})
        elif kind == HEADERS and s is not None:
            headers = dict(self.dec.decode(payload))
            s["headers"] = headers
            s["status"] = int(headers[":status"])
            s["done"] = bool(flags & 1)
        elif kind == DATA and s is not None:
            s["body"] += payload
            s["done"] = bool(flags & 1)
            if payload:
                out = frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", len(payload)))
        elif kind == RST_STREAM and s is not None:
            s["reset"] = struct.unpack(">I", payload[:4])[0]
        if out:
            try:
                self.sock.sendall(out)
            except OSError:
                pass

    results = None


def raw_results(c):
    out = []
    for sid, s in sorted(c.streams.items()):
        out.append({
            "sid": sid, "path": s["path"], "status": s["status"], "headers": s["headers"],
            "len": len(s["body"]), "sha256": hashlib.sha256(bytes(s["body"])).hexdigest(),
            "body": bytes(s["body"][:200]).decode("latin-1"), "done": s["done"], "reset": s["reset"],
        })
    return {"streams": out, "goaways": c.goaways, "closed": c.reader.closed}


def parse_headers(args):
    extra = []
    paths = []
    for a in args:
        if a.startswith("H:"):
            name, value = a[2:].split(":", 1)
            extra.append((name.lower(), value.strip()))
        else:
            paths.append(a)
    return paths, extra


def ws_frame(opcode, payload):
    """A masked WebSocket frame, as a client sends it (RFC 6455 5.2)."""
    mask = b"\x11\x22\x33\x44"
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_take(buf, frames):
    """Moves one whole unmasked frame from the front of `buf` to `frames`
    as (opcode, payload); True if there was one."""
    if len(buf) < 2:
        return False
    n, at = buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return False
        n, at = struct.unpack(">H", bytes(buf[2:4]))[0], 4
    elif n == 127:
        if len(buf) < 10:
            return False
        n, at = struct.unpack(">Q", bytes(buf[2:10]))[0], 10
    if len(buf) < at + n:
        return False
    frames.append((buf[0] & 0x0F, bytes(buf[at:at + n])))
    del buf[:at + n]
    return True


def main():
    args = sys.argv[1:]
    tls = False
    alpn = ("h2",)
    authority = "localhost"
    while args and args[0].startswith("--"):
        opt = args.pop(0)
        if opt == "--tls":
            tls = True
        elif opt == "--alpn":
            v = args.pop(0)
            alpn = tuple(x for x in v.split(",") if x)
        elif opt == "--authority":
            authority = args.pop(0)
    port = int(args.pop(0))
    mode = args.pop(0)
    out = {}

    if mode == "alpn":
        # Only the handshake: which protocol the server picked.
        sock, chosen = connect(port, tls, alpn)
        out = {"alpn": chosen}
        sock.close()

    elif mode == "get":
        # One connection, every request at once (HEAD with H:method).
        paths, extra = parse_headers(args)
        method = "GET"
        for name, value in list(extra):
            if name == "method":
                method = value
                extra.remove((name, value))
        c = Client(port, tls, authority=authority, alpn=alpn)
        for p in paths:
            c.request(p, method, extra)
        c.pump()
        out = c.results()

    elif mode == "many":
        # N concurrent streams over the listed paths, in turn.
        n = int(args.pop(0))
        c = Client(port, tls)
        for i in range(n):
            c.request(args[i % len(args)])
        c.pump(timeout=60)
        out = c.results()

    elif mode == "post":
        # A request body of LEN pattern bytes (i % 251), sent as the
        # server's windows allow; with "chunked", no content-length.
        path = args.pop(0)
        length = int(args.pop(0))
        declared = not (args and args[0] == "chunked")
        c = Client(port, tls)
        sid = c.conn.get_next_available_stream_id()
        extra = [("content-length", str(length))] if declared else []
        c.conn.send_headers(sid, request_headers(path, c.authority, tls, "POST", extra), end_stream=length == 0)
        c.streams[sid] = {"path": path, "status": None, "headers": {}, "body": bytearray(), "done": False, "reset": None}
        c.flush()
        body = bytes(i % 251 for i in range(length))
        sent = 0
        deadline = time.time() + 60
        while sent < length and time.time() < deadline and not c.closed:
            room = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size, length - sent)
            if room > 0:
                c.conn.send_data(sid, body[sent : sent + room], end_stream=sent + room == length)
                sent += room
                c.flush()
            else:
                c.pump(timeout=1, until=lambda: c.conn.local_flow_control_window(sid) > 0)
        c.pump(timeout=30)
        out = c.results()

    elif mode == "ws":
        # WebSocket over HTTP/2 (RFC 8441), with raw frames (the h2
        # package stops reading at a GOAWAY, and a drain sends one while
        # the tunnel goes on): whether the server allows extended CONNECT,
        # then a CONNECT with :protocol websocket to PATH; on a 200, each
        # MESSAGE goes as a masked text frame and its echo is read back;
        # then the client ends its side and waits for the server's. With
        # "hold" last: after the first echo, prints READY, waits for a
        # line on stdin, then for the server to end the stream (a drain's
        # close frame), at most 20 s.
        path = args.pop(0)
        hold = bool(args) and args[-1] == "hold"
        messages = args[:-1] if hold else args
        c = RawClient(port, tls, 65535)
        c.pump(lambda: c.settings_seen, 10)
        allowed = c.settings.get(8, 0) == 1
        out = {"connect_protocol": allowed}
        if allowed:
            headers = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https" if tls else "http"),
                       (":path", path), (":authority", "localhost"), ("sec-websocket-version", "13")]
            sid = c.open(path, headers, False)
            s = c.streams[sid]
            ended = lambda: s["done"] or s["reset"] is not None
            c.pump(lambda: s["status"] is not None or ended(), 20)
            echoes = []
            frames = []
            if s["status"] == 200:
                for i, m in enumerate(messages):
                    if ended():
                        break
                    c.sock.sendall(frame(DATA, 0, sid, ws_frame(0x1, m.encode())))
                    c.pump(lambda: ws_take(s["body"], frames) or ended(), 20)
                    if frames:
                        echoes.append(frames.pop(0)[1].decode("latin-1"))
                    if hold and i == 0:
                        print("READY", flush=True)
                        sys.stdin.readline()
                        c.pump(ended, 20)
                        while ws_take(s["body"], frames):
                            pass
                if not ended():
                    c.sock.sendall(frame(DATA, 1, sid))
                c.pump(ended, 20)
                while ws_take(s["body"], frames):
                    pass
            out.update({"status": s["status"], "headers": s["headers"], "echoes": echoes,
                        "frames": [[op, p.decode("latin-1")] for op, p in frames],
                        "done": s["done"], "reset": s["reset"]})

    elif mode == "connect":
        # A plain CONNECT to AUTHORITY (a tunnel Baton does not offer):
        # the status, and how long it took.
        c = RawClient(port, tls, 65535)
        sid = c.open(args[0], [(":method", "CONNECT"), (":authority", args[0])], False)
        s = c.streams[sid]
        start = time.time()
        c.pump(lambda: s["status"] is not None or s["reset"] is not None, 20)
        out = {"status": s["status"], "reset": s["reset"], "after": time.time() - start}

    elif mode == "stall-body":
        # A POST that declares LEN bytes, sends half of them and then
        # nothing: how long until the server ends the stream (reset or an
        # answer), at most WAIT seconds.
        path = args.pop(0)
        length = int(args.pop(0))
        wait = float(args.pop(0))
        c = Client(port, tls)
        sid = c.conn.get_next_available_stream_id()
        extra = [("content-length", str(length))]
        c.conn.send_headers(sid, request_headers(path, c.authority, tls, "POST", extra))
        c.streams[sid] = {"path": path, "status": None, "headers": {}, "body": bytearray(), "done": False, "reset": None}
        c.conn.send_data(sid, b"x" * (length // 2))
        c.flush()
        start = time.time()
        c.pump(timeout=wait, until=lambda: c.streams[sid]["done"] or c.streams[sid]["reset"] is not None)
        out = c.results()
        out["ended_after"] = time.time() - start

    elif mode == "slow":
        # A small window, opened a little at a time: the server must keep
        # within it and still deliver every byte.
        path = args[0]
        c = Client(port, tls, window=4096)
        c.request(path)
        deadline = time.time() + 60
        while not all(s["done"] for s in c.streams.values()) and time.time() < deadline and not c.closed:
            c.sock.settimeout(1)
            try:
                data = c.sock.recv(4096)
            except (socket.timeout, TimeoutError):
                continue
            if not data:
                c.closed = True
                break
            c.feed(data)
            time.sleep(0.002)
        out = c.results()

    elif mode == "hold":
        # N streams whose windows stay shut (SETTINGS_INITIAL_WINDOW_SIZE
        # 0) until told "go" on stdin: open streams across a reload or a
        # stop. Then every stream is read to its end, GOAWAYs or not, and
        # the connection until the server closes it.
        n = int(args.pop(0))
        path = args.pop(0)
        c = RawClient(port, tls, 0)
        for _ in range(n):
            c.request(path)
        c.pump(lambda: all(s["status"] is not None for s in c.streams.values()), 30)
        print("READY", flush=True)
        sys.stdin.readline()
        c.open_windows()
        c.pump(lambda: all(s["done"] or s["reset"] is not None for s in c.streams.values()), 60)
        c.pump(lambda: False, 10)
        out = raw_results(c)

    elif mode == "mute":
        # One request answered, then silence: no PING answered, no close,
        # nothing read, until a line on stdin.
        c = RawClient(port, tls, 65535)
        c.request(args[0])
        c.pump(lambda: all(s["done"] for s in c.streams.values()), 30)
        print("READY", flush=True)
        sys.stdin.readline()
        out = {"ok": True}

    elif mode == "stall":
        # Reads nothing: N streams of a big file, the socket left full.
        n = int(args.pop(0))
        path = args.pop(0)
        # Windows wide open: only the server's own bounds hold it back.
        c = Client(port, tls, window=2**31 - 1)
        c.conn.increment_flow_control_window(2**31 - 1 - 65535)
        c.flush()
        for _ in range(n):
            c.request(path)
        print("READY", flush=True)
        sys.stdin.readline()
        out = {"ok": True}

    elif mode == "zero_window":
        # A stream whose window is never opened.
        sock = raw_start(port, tls, struct.pack(">HI", 4, 0))
        enc = hpack.Encoder()
        sock.sendall(frame(HEADERS, 0x5, 1, enc.encode(request_headers(args[0], tls=tls))))
        out = watch(sock, seconds=float(args[1]) if len(args) > 1 else 10)

    elif mode == "over_limit":
        # More streams than the server allows at once (windows shut, so
        # none finishes): the extra ones must be refused.
        n = int(args.pop(0))
        sock = raw_start(port, tls, struct.pack(">HI", 4, 0))
        enc = hpack.Encoder()
        data = b"".join(
            frame(HEADERS, 0x5, 1 + 2 * i, enc.encode(request_headers(args[0], tls=tls))) for i in range(n)
        )
        sock.sendall(data)
        out = watch(sock, seconds=3)

    elif mode == "flood":
        kind = args.pop(0)
        count = int(args.pop(0)) if args else 5000
        settings = b""
        sock = raw_start(port, tls, settings)
        enc = hpack.Encoder()
        if kind == "settings":
            data = frame(SETTINGS, 0, 0, b"") * count
        elif kind == "ping":
            data = b"".join(frame(PING, 0, 0, struct.pack(">Q", i)) for i in range(count))
        elif kind == "priority":
            data = b"".join(frame(PRIORITY, 0, 1 + 2 * (i % 100), struct.pack(">IB", 0, 16)) for i in range(count))
        elif kind == "empty_data":
            data = frame(HEADERS, 0x4, 1, enc.encode(request_headers("/", tls=tls, method="POST")))
            data += frame(DATA, 0, 1, b"") * count
        elif kind == "rapid_reset":
            data = b""
            for i in range(count):
                sid = 1 + 2 * i
                data += frame(HEADERS, 0x5, sid, enc.encode(request_headers("/", tls=tls)))
                data += frame(RST_STREAM, 0, sid, struct.pack(">I", 8))
        elif kind == "continuation":
            block = enc.encode(request_headers("/", tls=tls))
            data = frame(HEADERS, 0x1, 1, block)
            filler = hpack.Encoder().encode([("x-filler", "a" * 100)])
            data += frame(CONTINUATION, 0, 1, filler) * count
        elif kind == "hpack_bomb":
            # One big field into the dynamic table, then referenced again
            # and again: a few bytes on the wire, megabytes decoded.
            first = enc.encode(request_headers("/", tls=tls) + [("x-bomb", "b" * 4000)])
            data = frame(HEADERS, 0x5, 1, first)
            # Index 62 is the newest dynamic entry (x-bomb).
            refs = bytes([0x80 | 62]) * count
            data += frame(HEADERS, 0x5, 3, enc.encode(request_headers("/", tls=tls)) + refs)
        else:
            raise SystemExit("unknown flood " + kind)
        sent_all = send_all(sock, data)
        seen = watch(sock, seconds=10)
        seen["sent_all"] = sent_all
        out = seen

    else:
        raise SystemExit("unknown mode " + mode)

    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
