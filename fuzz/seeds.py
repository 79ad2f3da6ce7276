#!/usr/bin/env python3
"""Write the fuzz targets' seed corpus (fuzz/corpus/<target>/): the request
heads, response heads, chunked bodies and paths the tests use, valid and
invalid, so that fuzzing starts from every shape the gateway is known to
meet. Run from anywhere: `python3 fuzz/seeds.py` (idempotent; libFuzzer
adds its own finds beside these, which are not committed)."""

import hashlib
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"

REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /shop/cart?id=7 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
    b"HEAD /length HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /pub/%2e%2e/%2e%2e/etc HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a%20b/{x}|y HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET http://internal.example/x HTTP/1.1\r\nHost: public.example\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: test\r\n\r\n",
    b"CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\n\r\n",
    b"GET /pub HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nContent_Length: 99\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nX-Request-ID: abc\r\nX-Forwarded-For: 10.0.0.1\r\nVia: 1.1 edge\r\nTE: trailers\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: user@x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
    b"GET / HTTP/1.1\nHost: t\n\n",
    b"\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nX-Empty:\r\nX-Tab: a\tb\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nX-Latin: caf\xe9\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\n Folded: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : t\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: t\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"PURGE /cache HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-Field-%d: %d\r\n" % (i, i) for i in range(60)) + b"\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-Field-%d: %d\r\n" % (i, i) for i in range(120)) + b"\r\n",
    b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nX-Switchyard-Test-Panic: route\r\n\r\n",
    # Found by inline_vs_hyper: a Transfer-Encoding hyper refuses (the
    # inline server must hand it to hyper, not serve it).
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: ch\xe6\xbf\xab\xb5d\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
]

RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 404 \r\nContent-Length: 2\r\n\r\nno",
    b"HTTP/1.1 200 Caf\xe9\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\nContent-Length: 2\nX-A: 1\n\nok",
    b"HTTP/1.1 103\r\nLink: </a>\r\n\r\nHTTP/1.1 201\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Spaces:   \r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 599 Custom\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 099 Low\r\n\r\n",
    b"HTTP/1.1 600 High\r\n\r\n",
    b"HTTP/2.0 200 OK\r\n\r\n",
    b"hello, world\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\nto the end",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"v1\"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nServer: b/1\r\nX-Powered-By: php\r\nVia: 1.0 edge, 1.1 mid\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nX-Request-ID: theirs\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nConnection: Date, Via\r\nDate: x\r\nVia: 1.1 a\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTrailer: x-sum\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-f%d: %d\r\n" % (i, i) for i in range(101)) + b"\r\n",
]

CHUNKED = [
    b"\x005\r\nhello\r\n0\r\n\r\n",
    b"\x015;x=1\r\nhel",
    b"\x04" + b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 9\r\n\r\n",
    b"\x00zz\r\n",
    b"\x005\r\nhello\r\nX",
    b"\x005\r\nhelloXX",
    b"\x0010000000000000000\r\n",
    b"\x00000000000000000000000010\r\n0123456789abcdef\r\n0\r\n\r\n",
    b"\x005;name=\"caf\xc3\xa9\"\r\nhello\r\n0\r\n\r\n",
    b"\x001\x01\r\nx\r\n0\r\n\r\n",
    b"\x03" + bytes(range(64)),
    b"\x07\x05hello\x00\x03abc\x27" + b"z" * 40,
    b"\x0b" + b"\x10" + b"q" * 16 + b"\x02ok",
]

PATHS = [
    b"/", b"/api/v1/users", b"/a.b/c..d", b"/pub/../admin", b"/./admin", b"//admin",
    b"/a//b///c", b"/a/b/..", b"/a/.", b"/..", b"/../../x", b"/a/", b"/pub/%2e%2e/admin",
    b"/pub/%2E%2e/admin", b"/%61dmin", b"/a%7eb", b"/a%3fb", b"/caf%c3%a9", b"/caf\xc3\xa9%41",
    b"/admin%2f", b"/a%2Fb", b"/a%5cb", b"/a%00", b"/a%zz", b"/a%2", b"/a b", b"/a\\b",
    b"/a#b", b"a/b", b"/%2e", b"/%2e%2e%2f",
]

SEEDS = {
    "request_head": REQUESTS,
    "inline_vs_hyper": REQUESTS,
    "response_head": [bytes([m]) + r for r in RESPONSES for m in (0, 1, 2)],
    "chunked": CHUNKED,
    "path": PATHS,
}

for target, seeds in SEEDS.items():
    directory = ROOT / target
    directory.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (directory / ("seed-" + hashlib.sha1(seed).hexdigest()[:16])).write_bytes(seed)
    print(f"{target}: {len(seeds)} seeds")
