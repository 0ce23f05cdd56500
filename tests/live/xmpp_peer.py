#!/usr/bin/env python3
"""A minimal XMPP client that is not ours (Python's ssl and sockets only), for the live checks.

usage: xmpp_peer.py HOST PORT CA_PEM DOMAIN USER MECH SECRET [send TO BODY | recv SECONDS]

With PLAIN, USER may be AUTHZID|AUTHCID, to ask for another authorization identity.

Signs in with STARTTLS (verifying the lab CA and the presence domain) and SASL MECH (PLAIN with
a password, CISCO-VTG-TOKEN with a one-time password), binds a resource, then either sends one
message or prints every message body it receives for SECONDS. Prints "bound <jid>" once signed
in; exits 1 with the reason on any failure.
"""
import base64, re, socket, ssl, sys, time


def read_until(sock, pattern, timeout=5.0):
    sock.settimeout(timeout)
    data = b""
    end = time.time() + timeout
    while time.time() < end:
        m = re.search(pattern, data, re.S)
        if m:
            return data
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    raise SystemExit(f"fail: waited for {pattern!r}, got {data[:300]!r}")


def header(domain):
    return (f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' "
            "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>").encode()


def main():
    host, port, ca, domain, user, mech, secret, mode = sys.argv[1:9]
    rest = sys.argv[9:]
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(header(domain))
    read_until(s, rb"<starttls[^>]*>.*?<required/>")
    s.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    read_until(s, rb"<proceed")
    ctx = ssl.create_default_context(cafile=ca)
    s = ctx.wrap_socket(s, server_hostname=domain)
    s.sendall(header(domain))
    feats = read_until(s, rb"</stream:features>")
    if mech.encode() not in feats:
        raise SystemExit(f"fail: {mech} not offered: {feats!r}")
    if mech == "PLAIN":
        # "AUTHZID|AUTHCID" asks to act as AUTHZID (RFC 4616 §2).
        authz, _, authc = user.rpartition("|")
        raw = f"{authz}\0{authc}\0{secret}"
    else:
        raw = f"userid={user}@{domain}\0token={secret}"
    b64 = base64.b64encode(raw.encode()).decode()
    s.sendall(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>{b64}</auth>".encode())
    r = read_until(s, rb"<(success|failure)")
    if b"<success" not in r:
        raise SystemExit(f"fail: SASL {mech} refused: {r!r}")
    s.sendall(header(domain))
    read_until(s, rb"</stream:features>")
    s.sendall(b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
              b"<resource>pytest</resource></bind></iq>")
    r = read_until(s, rb"<jid>([^<]+)</jid>")
    jid = re.search(rb"<jid>([^<]+)</jid>", r).group(1).decode()
    print(f"bound {jid}", flush=True)
    after = r.split(b"</iq>", 1)[1] if b"</iq>" in r else b""
    if mode == "send":
        to, body = rest
        s.sendall(f"<message to='{to}' type='chat'><body>{body}</body></message>".encode())
        time.sleep(0.3)
    else:
        # Available presence: bare-JID and stored messages go to available resources only
        # (RFC 6121 §8.5.2.1, SPEC IMP4).
        s.sendall(b"<presence/>")
        end = time.time() + float(rest[0])
        data = after
        s.settimeout(0.2)
        while time.time() < end:
            try:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            except socket.timeout:
                pass
        for b in re.findall(rb"<body>([^<]*)</body>", data):
            print(f"body {b.decode()}", flush=True)
    s.sendall(b"</stream:stream>")
    s.close()


if __name__ == "__main__":
    main()
