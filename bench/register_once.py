#!/usr/bin/env python3
"""Registers USER at a registrar with a UDP REGISTER sent from 127.0.0.1:PORT, the port a SIPp
UAS will listen on next, so that the binding's Contact and the request's source address agree
(no NAT handling). The AOR is sip:USER@SERVER_HOST:SERVER_PORT, the Request-URI that
bench/sipp/uac_call.xml calls. Retransmits every 0.5 s for up to 5 s; exits 0 on a 200, 1 otherwise.

    bench/register_once.py USER PORT SERVER_HOST SERVER_PORT
"""
import socket
import sys
import uuid


def main() -> int:
    user, port, host, sport = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    call_id = uuid.uuid4().hex
    branch = "z9hG4bK" + uuid.uuid4().hex
    msg = (
        f"REGISTER sip:{host}:{sport} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{host}:{sport}>;tag=reg1\r\n"
        f"To: <sip:{user}@{host}:{sport}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@127.0.0.1:{port}>\r\n"
        "Expires: 3600\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    s.settimeout(0.5)
    for _ in range(10):
        s.sendto(msg, (host, sport))
        try:
            while True:
                data, _ = s.recvfrom(65535)
                status = data.split(b"\r\n", 1)[0]
                if call_id.encode() not in data:
                    continue
                if status.startswith(b"SIP/2.0 1"):
                    continue
                print(status.decode(errors="replace"))
                return 0 if status.startswith(b"SIP/2.0 200") else 1
        except socket.timeout:
            continue
    print("no answer", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
