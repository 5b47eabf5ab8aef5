#!/usr/bin/env python3
"""Helpers for bench/run.sh (standard library only).

    benchtool.py stat STATFILE
        The last row of a SIPp -trace_stat file as `key=value` words: succ, fail, retrans,
        out (outgoing calls), in (incoming calls), current, dead (dead calls), unexp (failed on
        an unexpected message), maxretrans (failed after max UDP retransmissions).

    benchtool.py pcap PCAPFILE SERVER_PORT register|call
        Server-side latencies from a tcpdump capture on lo (kernel timestamps, ns), one line of
        `key=value` words:
        register: REGISTER in -> its 200 out, matched by Call-ID (first copy of each).
        call: every message the proxy relays (INVITE, ACK, BYE and the UAS's 180, 200, 200),
              in -> out, matched by Call-ID + CSeq + method/status; and `setup`: INVITE from
              the UAC -> 200 (INVITE) back to the UAC, which includes the UAS's own time.
        Percentiles are nearest-rank over the messages whose two copies are in the capture.

    benchtool.py rtt RTTFILE
        p50/p99/max of a SIPp -trace_rtt file (response time 1), in SIPp's unit (ms).

    benchtool.py threads PID
        `comm:run_ns` for every thread name of PID (/proc/PID/task/*/schedstat; threads
        sharing a name are added up).

    benchtool.py callees PREFIX HOST
        Two user names PREFIX-<n> whose AORs sip:USER@HOST are owned by shard 0 and by
        shard 1 of a 2-shard sipshard (registrar/src/aor.rs: FNV-1a 64, fmix64 finaliser,
        owner = high bit), so that a caller alternating between them makes half of the
        INVITE lookups cross shards whichever shard receives the INVITEs.

    benchtool.py cpu PID...
        CPU time used so far by the processes PID and all their threads: `sched_ns` (sum of
        /proc/PID/task/*/schedstat run time) and `ticks` (utime + stime of /proc/PID/stat, in
        clock ticks of 1/SC_CLK_TCK s).
"""
import csv
import glob
import os
import struct
import sys


def cmd_stat(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    head, last = rows[0], rows[-1]
    d = dict(zip(head, last))

    def g(k):
        return d.get(k, "0") or "0"

    print(
        f"succ={g('SuccessfulCall(C)')} fail={g('FailedCall(C)')} "
        f"retrans={g('Retransmissions(C)')} out={g('OutgoingCall(C)')} in={g('IncomingCall(C)')} "
        f"current={g('CurrentCall')} dead={g('DeadCallMsgs(C)')} "
        f"unexp={g('FailedUnexpectedMessage(C)')} maxretrans={g('FailedMaxUDPRetrans(C)')}"
    )


def pctl(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(-(-p * len(values) // 100)) - 1))
    return values[k]


def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0xA1B23C4D:
        scale = 1
    elif magic == 0xA1B2C3D4:
        scale = 1000
    else:
        raise SystemExit(f"{path}: not a little-endian pcap file")
    linktype = struct.unpack("<I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack("<IIII", data[off : off + 16])
        pkt = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        ts = sec * 1_000_000_000 + frac * scale
        if linktype == 1:  # Ethernet (lo)
            if len(pkt) < 14 or pkt[12:14] != b"\x08\x00":
                continue
            ip = pkt[14:]
        elif linktype == 113:  # Linux cooked (-i any)
            ip = pkt[16:]
        else:
            continue
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 15) * 4
        sport, dport = struct.unpack(">HH", ip[ihl : ihl + 4])
        yield ts, sport, dport, ip[ihl + 8 :]


def sip_fields(payload):
    head = payload.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    first = lines[0]
    call_id = cseq = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        n = name.strip().lower()
        if n in (b"call-id", b"i"):
            call_id = value.strip()
        elif n == b"cseq":
            cseq = value.strip()
    if first.startswith(b"SIP/2.0 "):
        kind = first.split(b" ", 2)[1]  # status code
    else:
        kind = first.split(b" ", 1)[0]  # method
    return kind, call_id, cseq


def cmd_pcap(path, port, mode):
    port = int(port)
    seen_in = {}
    seen_out = {}
    setup_in = {}
    setup_out = {}
    packets = 0
    for ts, sport, dport, payload in read_pcap(path):
        packets += 1
        try:
            kind, call_id, cseq = sip_fields(payload)
        except (IndexError, ValueError):
            continue
        if call_id is None or cseq is None:
            continue
        if dport == port and sport != port:
            direction = "in"
        elif sport == port and dport != port:
            direction = "out"
        else:
            continue
        if mode == "register":
            if direction == "in" and kind == b"REGISTER":
                seen_in.setdefault(call_id, ts)
            elif direction == "out" and kind == b"200" and cseq.endswith(b"REGISTER"):
                seen_out.setdefault(call_id, ts)
        else:
            key = (call_id, cseq, kind)
            if direction == "in":
                seen_in.setdefault(key, ts)
                if kind == b"INVITE":
                    setup_in.setdefault(call_id, (ts, sport))
            else:
                seen_out.setdefault(key, ts)
                if kind == b"200" and cseq.endswith(b"INVITE"):
                    setup_out.setdefault(call_id, (ts, dport))
    lat = [
        (seen_out[k] - t) / 1000.0
        for k, t in seen_in.items()
        if k in seen_out and seen_out[k] >= t
    ]
    words = [
        f"packets={packets}",
        f"n={len(lat)}",
        f"p50_us={pctl(lat, 50):.1f}",
        f"p99_us={pctl(lat, 99):.1f}",
        f"max_us={max(lat) if lat else float('nan'):.1f}",
    ]
    if mode == "call":
        setup = [
            (setup_out[c][0] - t) / 1000.0
            for c, (t, uac) in setup_in.items()
            if c in setup_out and setup_out[c][1] == uac and setup_out[c][0] >= t
        ]
        words += [
            f"setup_n={len(setup)}",
            f"setup_p50_us={pctl(setup, 50):.1f}",
            f"setup_p99_us={pctl(setup, 99):.1f}",
        ]
    print(" ".join(words))


def cmd_rtt(path):
    vals = []
    with open(path) as f:
        next(f, None)
        for line in f:
            parts = line.strip().split(";")
            if len(parts) >= 3 and parts[2] == "1":
                vals.append(float(parts[1]))
    print(
        f"n={len(vals)} p50_ms={pctl(vals, 50):g} p99_ms={pctl(vals, 99):g} "
        f"max_ms={max(vals) if vals else float('nan'):g}"
    )


def cmd_cpu(pids):
    sched = 0
    ticks = 0
    for pid in pids:
        for task in glob.glob(f"/proc/{pid}/task/*/schedstat"):
            try:
                with open(task) as f:
                    sched += int(f.read().split()[0])
            except OSError:
                pass
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except OSError:
            pass
    print(f"sched_ns={sched} ticks={ticks} clk_tck={os.sysconf('SC_CLK_TCK')}")


def cmd_threads(pid):
    total = {}
    for task in sorted(glob.glob(f"/proc/{pid}/task/*")):
        try:
            with open(f"{task}/comm") as f:
                comm = f.read().strip()
            with open(f"{task}/schedstat") as f:
                ns = int(f.read().split()[0])
        except OSError:
            continue
        total[comm] = total.get(comm, 0) + ns
    print(" ".join(f"{k}:{v}" for k, v in total.items()))


def aor_owner(aor, shards):
    h = 0xCBF29CE484222325
    for b in aor.encode():
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & 0xFFFFFFFFFFFFFFFF
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & 0xFFFFFFFFFFFFFFFF
    h ^= h >> 33
    return (h * shards) >> 64


def cmd_callees(prefix, host):
    found = {}
    n = 0
    while len(found) < 2:
        user = f"{prefix}-{n}"
        found.setdefault(aor_owner(f"sip:{user}@{host}", 2), user)
        n += 1
    print(found[0], found[1])


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    cmd = sys.argv[1]
    if cmd == "stat":
        cmd_stat(sys.argv[2])
    elif cmd == "pcap":
        cmd_pcap(*sys.argv[2:5])
    elif cmd == "rtt":
        cmd_rtt(sys.argv[2])
    elif cmd == "cpu":
        cmd_cpu(sys.argv[2:])
    elif cmd == "callees":
        cmd_callees(sys.argv[2], sys.argv[3])
    elif cmd == "threads":
        cmd_threads(sys.argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
