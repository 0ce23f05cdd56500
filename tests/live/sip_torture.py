#!/usr/bin/env python3
"""Sends every RFC 4475 and RFC 5118 torture message to a SIP server over UDP and over TCP and
checks the final status against corpora/sip/expected.txt; then checks that OPTIONS is still
answered. Usage: sip_torture.py HOST PORT CORPUS_DIR [--digest]. Prints one line per check.

--digest: the registrar asks for digest credentials, and authentication comes before the
address of record (RFC 3261 §10.3, steps 3 and 5): a readable REGISTER the corpus expects 200
or 404 for gets 401 instead."""
import socket
import sys

host, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
digest = "--digest" in sys.argv[4:]


def final_status(data):
    """The first final (>= 200) status code in a byte stream of responses, or None."""
    for line in data.split(b"\r\n"):
        if line.startswith(b"SIP/2.0 "):
            code = line.split(b" ")[1]
            if code.isdigit() and int(code) >= 200:
                return int(code)
    return None


def udp(msg, wait=0.5):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(wait)
    s.sendto(msg, (host, port))
    got = b""
    try:
        while final_status(got) is None:
            got += s.recv(65535)
    except socket.timeout:
        pass
    s.close()
    return final_status(got)


def tcp(msg, wait=2.0):
    s = socket.create_connection((host, port), timeout=wait)
    s.sendall(msg)
    s.shutdown(socket.SHUT_WR)
    got = b""
    try:
        while True:
            b = s.recv(65535)
            if not b:
                break
            got += b
    except socket.timeout:
        pass
    s.close()
    return final_status(got)


bad = 0
n = 0
for line in open(f"{root}/expected.txt"):
    line = line.split("#")[0].split()
    if not line:
        continue
    name, want_udp, want_tcp = line[0], line[1], line[2]
    msg = open(f"{root}/{name}", "rb").read()
    if digest and msg.startswith(b"REGISTER "):
        want_udp, want_tcp = (("401" if w in ("200", "404") else w) for w in (want_udp, want_tcp))
    for proto, want, send in (("udp", want_udp, udp), ("tcp", want_tcp, tcp)):
        got = send(msg)
        want = None if want == "-" else int(want)
        n += 1
        if got != want:
            bad += 1
            print(f"FAIL {name} over {proto}: want {want}, got {got}")
opts = (
    "OPTIONS sip:cucm1.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKafter\r\n"
    "From: <sip:probe@example.com>;tag=1\r\nTo: <sip:cucm1.example.com>\r\nCall-ID: after-corpus\r\n"
    "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
).encode()
alive = udp(opts, 2.0) == 200 and tcp(opts) == 200
print(f"torture: {n - bad}/{n} answers as expected; OPTIONS after the corpus: {'200' if alive else 'no answer'}")
sys.exit(0 if bad == 0 and alive else 1)
