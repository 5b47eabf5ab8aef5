#!/usr/bin/env python3
"""Seeds corpus/digest/ with request histories (layout in fuzz_targets/digest.rs): a challenge,
then right, replayed, wrong and stale answers, for each algorithm, with and without `opaque`."""
import pathlib

here = pathlib.Path(__file__).resolve().parent
SEP = b"\n%%\n"
out = here / "corpus" / "digest"
out.mkdir(parents=True, exist_ok=True)


def creds(user="alice", alg="SHA-256", nc=1, uri="sip:example.org", opaque=False, resp="%R"):
    v = (f'Digest username="{user}", realm="example.org", nonce="%N", uri="{uri}", '
         f'response="{resp}", algorithm={alg}, qop=auth, nc={nc:08x}, cnonce="0a4f113b"')
    if opaque:
        v += ', opaque="fuzz-opaque"'
    return v.encode()


n = 0
for flags in (0, 1, 4):
    opaque = bool(flags & 1)
    for alg, user_bits in [("SHA-256", 0x00), ("MD5", 0x40), ("SHA-256", 0x80), ("SHA-512-256-sess", 0x00),
                           ("MD5-sess", 0x40)]:
        user = {0x00: "alice", 0x40: "bob", 0x80: "carol"}[user_bits]
        steps = [
            bytes([user_bits, 0]) + b"",
            bytes([user_bits, 0]) + creds(user, alg, 1, opaque=opaque),
            bytes([user_bits, 0]) + creds(user, alg, 1, opaque=opaque),
            bytes([user_bits | 1, 0]) + creds(user, alg, 2, opaque=opaque),
            bytes([user_bits, 0]) + creds(user, alg, 3, opaque=opaque, resp="%W"),
            bytes([user_bits | 3, 0]) + creds(user, alg, 4, opaque=opaque),
            bytes([user_bits, 0]) + creds(user, alg, 1, opaque=opaque),
        ]
        (out / f"register-{flags}-{alg}-{user}").write_bytes(bytes([flags]) + SEP.join(steps))
        n += 1
    # INVITE with Proxy-Authorization, from 192.0.2.1 as IPv4-mapped IPv6, escaped user part.
    steps = [
        bytes([0x1c, 3]) + b"",
        bytes([0x1c, 3]) + creds("alice", "MD5", 1, uri="sip:carol@example.org", opaque=opaque),
        bytes([0x10, 0x0c]) + creds("alice", "MD5", 2, uri="sip:carol@example.org", opaque=opaque),
        bytes([0x18, 0x00]) + creds("alice", "MD5", 3, uri="sip:carol@example.org", opaque=opaque),
    ]
    (out / f"invite-{flags}").write_bytes(bytes([flags]) + SEP.join(steps))
    n += 1
    # Guessing until locked out, then the right password.
    steps = [bytes([0, 0])] + [bytes([0, 0]) + creds(nc=i, resp="%W", opaque=opaque) for i in range(1, 8)] \
        + [bytes([1, 0]) + creds(nc=9, opaque=opaque)]
    (out / f"guess-{flags}").write_bytes(bytes([flags]) + SEP.join(steps))
    n += 1
(out / "regaut01").write_bytes(b"\x00\x00\x00NoOneKnowsThisScheme opaque-data=here")
print(f"corpus/digest: {n + 1} seeds")
