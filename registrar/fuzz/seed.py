#!/usr/bin/env python3
"""Seeds corpus/register/ and corpus/redis_reply/ (see README.md in net/fuzz for the layout).

register: every fixture that holds a REGISTER (tests/fixtures), as a one-step history under each
configuration byte 0 and 1, plus hand-written histories (refresh, replay, lower CSeq, removal,
`*`, a fetch). redis_reply: well-formed lookup and register replies in each shape, built from a
stored value of the documented layout (registrar/src/redis_data.rs).
"""
import os, pathlib, struct

here = pathlib.Path(__file__).resolve().parent
fixtures = here.parent.parent / "tests" / "fixtures"
SEP = b"\n%%\n"


def write(target, name, data):
    d = here / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


# register ----------------------------------------------------------------------------------
count = 0
for path in sorted(fixtures.rglob("*")):
    if not path.is_file():
        continue
    data = path.read_bytes()
    if b"REGISTER" not in data[:200]:
        continue
    name = str(path.relative_to(fixtures)).replace("/", "__")
    for flags in (0, 1):
        write("register", f"{flags}-{name}", bytes([flags, 0]) + data)
        count += 1


def register(user="alice", cseq=1, contact="<sip:alice@198.51.100.7:5060>", expires=None,
             call_id="c1@198.51.100.7", extra=""):
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-%d;rport" % cseq,
        "Max-Forwards: 70",
        f"From: <sip:{user}@example.com>;tag=1",
        f"To: <sip:{user}@example.com>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if extra:
        lines.append(extra)
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


histories = {
    "refresh-replay-lower": [
        (0, register()), (1, register(cseq=2)), (0x80, b""), (0x80, b"\x01"),
        (0x22, register(cseq=3, expires=0)),
    ],
    "two-contacts-evict": [
        (0, register(contact="<sip:a@198.51.100.7>;q=0.5, <sip:b@198.51.100.7>;expires=120")),
        (0x08, register(cseq=2, contact="<sip:c@198.51.100.7>;+sip.instance=\"<urn:uuid:1>\";reg-id=1",
                        extra="Supported: outbound, path")),
        (0x10, register(cseq=3, contact="<sip:d@203.0.113.5>")),
        (0x58, register(cseq=4, contact="<sip:e@203.0.113.5>", call_id="other")),
        (0x06, register(cseq=5, contact=None)),
    ],
    "star": [
        (0, register()), (0x18, register(user="bob", cseq=7)),
        (0x01, register(cseq=9, contact="*", expires=0)), (0x25, register(user="bob", cseq=8)),
    ],
    "expire": [
        (0, register(expires=60)), (0x04, register(cseq=2)), (0x26, register(cseq=3, contact=None)),
    ],
}
for name, steps in histories.items():
    for flags in (0, 1, 2, 8):
        data = bytes([flags]) + SEP.join(bytes([c]) + d for c, d in steps)
        write("register", f"history-{name}-{flags}", data)
        count += 1
print(f"corpus/register: {count} seeds")

# redis_reply -------------------------------------------------------------------------------
SERVER = 1_764_000_000_000
value = (
    '{"uri":"sip:alice@192.0.2.1:40000;transport=tcp","echo":"<sip:alice@192.0.2.1:40000;transport=tcp>",'
    '"q":500,"inst":"<urn:uuid:1>","rid":1,"path":["<sip:edge.example.com;lr>"],'
    '"src":{"t":"TCP","r":"192.0.2.1:40000","l":"192.0.2.9:5060","c":"18446744073709551614","n":"node-a"},'
    '"vms":true,"ua":"Test \\"UA\\"/1.0\\u0001\\u00e9","m":{"b":"sip:alice@192.0.2.1:40000","p":{"transport":"tcp"}},'
    '"v":1,"cid":"c1@host","cseq":7,"reg":%d,"upd":%d,"ord":0,"exp":%d}' % (SERVER - 5000, SERVER, SERVER + 600000)
).encode()
value2 = (
    '{"uri":"sip:bob@[2001:db8::1]","echo":"<sip:bob@[2001:db8::1]>","path":{},'
    '"src":{"t":"UDP","r":"[2001:db8::1]:5060","l":"[2001:db8::9]:5060","n":"n"},"vms":false,'
    '"m":{"b":"sip:bob@[2001:db8::1]","p":{}},"v":1.0,"cid":"x","cseq":1.0e0,"reg":1.764e+12,'
    '"upd":1764000000000,"ord":1,"exp":1764000060000}'
).encode()
fields = [b"inst:<urn:uuid:1>;reg-id=1", b"uri:sip:bob@[2001:db8::1]"]


def sized(b):
    return struct.pack("<H", len(b)) + b


def bulk(b):
    return b"\x03" + sized(b)


def array(items):
    return b"\x06" + bytes([len(items)]) + b"".join(items)


def integer(n):
    return b"\x01" + struct.pack("<q", n)


time = struct.pack("<Q", SERVER)
pairs = [bulk(fields[0]), bulk(value), bulk(fields[1]), bulk(value2)]
write("redis_reply", "tree-lookup", b"\x00" + array([integer(SERVER), array(pairs)]))
write("redis_reply", "tree-register", b"\x00" + array([
    integer(SERVER), integer(1), array([bulk(b"added"), bulk(b"refreshed")]), integer(0), array(pairs)]))
write("redis_reply", "tree-error", b"\x00\x05" + sized(b"NOSCRIPT No matching script"))
write("redis_reply", "lookup", b"\x01" + time + b"".join(pairs))
write("redis_reply", "register", b"\x02" + time + b"\x01\x00\x02" + bulk(b"stale") + bulk(b"removed")
      + b"".join(pairs))
write("redis_reply", "pairs", b"\x03" + time + sized(fields[0]) + sized(value) + sized(fields[1]) + sized(value2))
for i, json in enumerate([b'[1,2.5e3,-0,"\\ud83d\\ude00",{"a":null}]', b'{"a":[[[[[[[[[]]]]]]]]]}', b' "x\\/" ']):
    write("redis_reply", f"json-{i}", b"\x03" + time + sized(b"f") + sized(json))
print("corpus/redis_reply: %d seeds" % len(list((here / "corpus" / "redis_reply").iterdir())))
