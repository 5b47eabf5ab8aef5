#!/bin/sh
# Seeds corpus/parse/ and corpus/framer/ with every file of the repository's SIP fixtures. Each file
# is named after its path (slashes become "__") so that equal names in different folders do not
# collide. Then corpus/websocket/ (see below).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
fixtures="$here/../../tests/fixtures"
for target in parse framer; do
    mkdir -p "$here/corpus/$target"
    for dir in rfc4475 rfc5118 real protos/rendered; do
        (cd "$fixtures" && find "$dir" -type f) | while read -r f; do
            cp "$fixtures/$f" "$here/corpus/$target/$(echo "$f" | sed 's|/|__|g')"
        done
    done
    echo "corpus/$target: $(ls "$here/corpus/$target" | wc -l) files"
done

# corpus/websocket: handshakes and frame streams, written by a short Python program (the layout is
# in fuzz_targets/websocket.rs: a flags byte, chunk sizes, then the stream). Flag 4 puts the valid
# upgrade request in front, so those seeds are frames only; the others start with a request head.
# SIP messages come from tests/fixtures/real, in text and binary frames, whole and fragmented.
python3 - "$here/corpus/websocket" "$fixtures/real" <<'PY'
import os, struct, sys

out, real = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)

def frame(opcode, payload, fin=True, mask=b"\x37\xfa\x21\x3d", rsv=0):
    b0 = (0x80 if fin else 0) | rsv | opcode
    m = 0x80 if mask is not None else 0
    n = len(payload)
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if mask is None:
        return head + payload
    return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))

def close(code, reason=b""):
    return frame(8, struct.pack(">H", code) + reason)

UPGRADE = (b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: sip\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")

def seed(name, stream, sizes=(255,), with_upgrade=True):
    flags = (len(sizes) - 1) | (4 if with_upgrade else 0)
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes([flags]) + bytes(sizes) + stream)

hello = frame(1, b"Hello")
seed("rfc6455-masked-hello", hello)
seed("rfc6455-fragmented-hello", frame(1, b"Hel", fin=False) + frame(0, b"lo"), sizes=(0,))
seed("rfc6455-ping-pong", frame(9, b"Hello") + frame(10, b"Hello") + hello, sizes=(2, 6))
seed("binary-256", frame(2, bytes(range(256))), sizes=(3, 200))
seed("binary-4000", frame(2, bytes(4000)), sizes=(255, 255, 17))
seed("binary-65536-too-big", frame(2, bytes(65536))[:200])
seed("fragments-with-control", frame(2, b"a", fin=False) + frame(9, b"") + frame(0, b"b", fin=False)
     + frame(10, b"x") + frame(0, b"", fin=True) + close(1000, b"bye"), sizes=(1, 7))
seed("close-empty", frame(8, b""))
seed("close-private-code", close(4000, "é".encode()))
seed("close-then-garbage", close(1001, b"going away") + b"\xff" * 20)
seed("error-unmasked", frame(1, b"Hello", mask=None))
seed("error-rsv", frame(1, b"Hello", rsv=0x40))
seed("error-opcode", frame(3, b""))
seed("error-utf8", frame(1, b"\xc3(", fin=False) + frame(0, b"ok"))
seed("error-close-code", close(1005))
seed("error-continuation", frame(0, b"x"))
seed("error-long-control", frame(9, bytes(126)))
seed("error-nonminimal-length", bytes([0x82, 0xFE, 0x00, 0x05]) + bytes(4) + b"hello")

sips = sorted(os.path.join(d, f) for d, _, fs in os.walk(real) for f in fs if f.endswith(".sip"))
for path in sips[:: max(1, len(sips) // 12)]:
    msg = open(path, "rb").read()[:4000]
    name = os.path.basename(path)[:-4]
    seed("sip-text-" + name, frame(1, msg), sizes=(99,))
    half = len(msg) // 2
    seed("sip-fragmented-" + name, frame(2, msg[:half], fin=False, mask=b"\x01\x02\x03\x04")
         + frame(9, b"keepalive") + frame(0, msg[half:], mask=b"\xaa\xbb\xcc\xdd"), sizes=(13, 200))

# Request heads: the valid one followed by frames, and each kind of refusal.
seed("upgrade-then-frames", UPGRADE + hello + close(1000), sizes=(40,), with_upgrade=False)
seed("upgrade-trickled", UPGRADE + hello, sizes=(0,), with_upgrade=False)
for name, old, new in [
    ("upgrade-post", b"GET", b"POST"),
    ("upgrade-http10", b"HTTP/1.1", b"HTTP/1.0"),
    ("upgrade-version-8", b"Version: 13", b"Version: 8"),
    ("upgrade-no-sip", b"Protocol: sip", b"Protocol: chat"),
    ("upgrade-bad-key", b"dGhlIHNhbXBsZSBub25jZQ==", b"c2hvcnQ="),
    ("upgrade-h2c", b"Upgrade: websocket", b"Upgrade: h2c"),
    ("upgrade-keepalive", b"Connection: Upgrade", b"Connection: keep-alive, Upgrade"),
    ("upgrade-body", b"\r\n\r\n", b"\r\nContent-Length: 3\r\n\r\n"),
]:
    seed(name, UPGRADE.replace(old, new, 1) + hello, with_upgrade=False)
seed("upgrade-too-large", UPGRADE.replace(b"Host: a", b"Host: " + b"a" * 2100), with_upgrade=False)
PY
echo "corpus/websocket: $(ls "$here/corpus/websocket" | wc -l) files"
