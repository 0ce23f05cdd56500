#!/usr/bin/env python3
"""Issue 13's attacks on a running `uclab serve`, each with what must hold afterwards.

usage: attacks.py PORTS_JSON CA_PEM SERVE_PID

Prints one line per check, "ok TEXT" or "FAIL TEXT", and the figures it measured. Every
socket it opens goes to the addresses of the port map (loopback); every loop is bounded in
count and time.
"""
import json, os, socket, ssl, sys, threading, time


def entry(ports, node, service):
    for e in ports:
        if e["node"] == node and e["service"] == service:
            host, port = e["addr"].rsplit(":", 1)
            return host, int(port)
    raise SystemExit(f"FAIL no {node}/{service} in the port map")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def report(ok, text):
    print(("ok " if ok else "FAIL ") + text, flush=True)


def closed_within(sock, limit):
    """Seconds until the peer closes `sock` (reading and discarding), or None past `limit`."""
    t0 = time.time()
    sock.settimeout(0.5)
    data = b""
    while time.time() - t0 < limit:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        except (ConnectionResetError, ssl.SSLError, OSError):
            return time.time() - t0, data
        if not chunk:
            return time.time() - t0, data
        data += chunk
    return None, data


def count_closed(conns):
    """How many of `conns` the peer has closed (a read gives EOF or an error right away)."""
    shut = 0
    for c in conns:
        c.setblocking(False)
        try:
            if c.recv(1) == b"":
                shut += 1
        except BlockingIOError:
            pass
        except OSError:
            shut += 1
    return shut


def tls(host, port, name, ca):
    ctx = ssl.create_default_context(cafile=ca)
    s = socket.create_connection((host, port), timeout=5)
    return ctx.wrap_socket(s, server_hostname=name)


def side_by_side(checks):
    """Runs each check (a function that appends (ok, text) verdicts to the list it is given)
    in a thread of its own, then reports every verdict in the order of `checks`. A check that
    raises reports FAIL with the exception."""
    outs = [[] for _ in checks]

    def one(check, out):
        try:
            check(out)
        except Exception as e:  # a refused connection, a TLS error: the check fails
            out.append((False, f"check raised {e!r}"))

    threads = [threading.Thread(target=one, args=(c, o), daemon=True) for c, o in zip(checks, outs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for t, out in zip(threads, outs):
        if t.is_alive():
            out.append((False, "check still running after 60 s"))
        for ok, text in out:
            report(ok, text)


def main():
    ports_path, ca, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ports = json.load(open(ports_path))
    uds = entry(ports, "cucm1", "uds")
    soap = entry(ports, "imp1", "soap")
    sip = entry(ports, "cucm1", "sip-tcp")
    base_fds = fds(pid)

    # 1-3 and 5 each wait out a deadline of about 10 s on a connection of its own: they run
    # side by side (a handful of connections, far below any per-peer cap), and their verdicts
    # print in this order. 4 and 6 open hundreds of connections from one address to test the
    # per-peer caps, so they run alone afterwards.
    edge = entry(ports, "expe", "edge")

    # 1. An HTTPS request whose body never arrives (Content-Length 500, 3 bytes sent): 408
    #    and closed within the body deadline (10 s); 1b the same at Expressway-E's edge
    #    (issue 16), which keeps serving afterwards.
    def slow_body(out, at, host, path, label):
        s = tls(*at, host, ca)
        s.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: " + host.encode() +
                  b"\r\nContent-Length: 500\r\n\r\nabc")
        t, data = closed_within(s, 20)
        out.append((t is not None and t < 14 and b" 408 " in data,
                    f"{label}body 3 of 500 bytes: {data[:12]!r} and closed after {t and round(t, 1)} s"))
        s.close()

    def slow_edge(out):
        slow_body(out, edge, "expe.example.com", b"/ZXhhbXBsZS5jb20/get_edge_config/", "edge: ")
        s = tls(*edge, "expe.example.com", ca)
        s.sendall(b"GET /ZXhhbXBsZS5jb20/get_edge_config/ HTTP/1.1\r\nHost: expe.example.com\r\n"
                  b"Connection: close\r\n\r\n")
        t, data = closed_within(s, 20)
        out.append((b" 401 " in data, f"edge after a slow client: still answers ({data[:12]!r})"))
        s.close()

    # 2. A head sent one byte every 0.5 s (slowloris): closed within the head deadline.
    def slow_head(out):
        s = tls(*uds, "cucm1.example.com", ca)
        head = b"GET /cucm-uds/version HTTP/1.1\r\nHost: cucm1.example.com\r\nX-Slow: " + b"a" * 200
        t0, closed = time.time(), None
        for b in head:
            try:
                s.sendall(bytes([b]))
            except (OSError, ssl.SSLError):
                closed = time.time() - t0
                break
            time.sleep(0.5)
            if time.time() - t0 > 20:
                break
        if closed is None:
            t, _ = closed_within(s, 5)
            closed = t and (time.time() - t0)
        out.append((closed is not None and 8 < closed < 15,
                    f"HTTPS slow head (1 byte / 0.5 s): closed after {closed and round(closed, 1)} s"))
        s.close()

    # 2b. An idle keep-alive connection after one answered request: closed within 10 s.
    def idle_keepalive(out):
        s = tls(*uds, "cucm1.example.com", ca)
        s.sendall(b"GET /cucm-uds/version HTTP/1.1\r\nHost: cucm1.example.com\r\n\r\n")
        t, data = closed_within(s, 20)
        out.append((t is not None and t < 14 and b" 200 " in data,
                    f"HTTPS keep-alive idle after a 200: closed after {t and round(t, 1)} s"))
        s.close()

    # 3. A slow chunked body (1 byte / 0.5 s) is cut off at the body deadline.
    def slow_chunked(out):
        s = tls(*soap, "imp1.example.com", ca)
        s.sendall(b"POST /EPASSoap/service/v80 HTTP/1.1\r\nHost: imp1.example.com\r\n"
                  b"Content-Type: application/soap+xml\r\nTransfer-Encoding: chunked\r\n\r\n")
        t0, got = time.time(), b""
        s.settimeout(0.01)
        while time.time() - t0 < 20:
            try:
                s.sendall(b"1\r\nx\r\n")
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            except (socket.timeout, ssl.SSLWantReadError):
                pass
            except (OSError, ssl.SSLError):
                break
            time.sleep(0.5)
        took = time.time() - t0
        out.append((8 < took < 15 and b" 408 " in got,
                    f"HTTPS slow chunked body: cut off after {round(took, 1)} s ({got[:12]!r})"))
        s.close()

    # 5. SIP over TCP: a message that never ends is closed at the partial-message deadline.
    def sip_partial(out):
        s = socket.create_connection(sip, timeout=5)
        s.sendall(b"REGISTER sip:cucm1.example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999"
                  b";branch=z9hG4bKslow\r\nContent-Length: 50\r\n\r\nabc")
        t, _ = closed_within(s, 20)
        out.append((t is not None and t < 14, f"SIP/TCP partial message: closed after {t and round(t, 1)} s"))
        s.close()

    side_by_side([
        lambda out: slow_body(out, uds, "cucm1.example.com", b"/cucm-uds/version", "HTTPS "),
        slow_edge, slow_head, idle_keepalive, slow_chunked, sip_partial,
    ])

    # 4. 300 connections held on UDS, each in its body: the per-peer cap closes all but 64
    #    at once and the body deadline the rest.
    held = []
    for _ in range(300):
        try:
            c = socket.create_connection(uds, timeout=5)
            held.append(c)
        except OSError:
            break
    time.sleep(1)
    shut = count_closed(held)
    report(len(held) == 300 and shut >= 300 - 64,
           f"300 connections from one address on UDS: {shut} closed at once (cap 64 per peer)")
    time.sleep(12)
    left = len(held) - count_closed(held)
    for c in held:
        c.close()
    report(left == 0, f"...and none of them open 13 s later (TLS handshake deadline): {left} left")

    # 6. 100 idle SIP/TCP connections from one address: the per-peer cap admits 64.
    idle = [socket.create_connection(sip, timeout=5) for _ in range(100)]
    time.sleep(1)
    shut = count_closed(idle)
    for c in idle:
        c.close()
    report(shut == 36, f"100 idle SIP/TCP connections from one address: {shut} closed at once")

    # 7. Control bytes from the wire: an OPTIONS with ESC in its Request-URI is answered
    #    (run.sh then checks that serve's stderr holds no raw control byte).
    marker = "FOO"
    s = socket.create_connection(sip, timeout=5)
    s.sendall(f"OPTIONS sip:{marker}\x1b[31m@cucm1.example.com SIP/2.0\r\nVia: SIP/2.0/TCP "
              "127.0.0.1:5999;branch=z9hG4bKesc\r\nFrom: <sip:x@127.0.0.1>;tag=1\r\nTo: "
              "<sip:y@127.0.0.1>\r\nCall-ID: esc\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
              "Content-Length: 0\r\n\r\n".encode())
    s.settimeout(5)
    try:
        answer = s.recv(4096)
    except OSError:
        answer = b""
    s.close()
    report(answer.startswith(b"SIP/2.0 "), f"OPTIONS with control bytes answered: {answer[:20]!r}")

    # A DNS name with an escape sequence in a label, which serve logs (escaped).
    dns = entry(ports, "dns-int", "dns")
    q = bytes.fromhex("123401000001000000000000")
    for label in [b"FOO\x1b[31m", b"example", b"com"]:
        q += bytes([len(label)]) + label
    q += bytes.fromhex("0000010001")
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(3)
    u.sendto(q, dns)
    try:
        r = u.recv(512)
    except OSError:
        r = b""
    u.close()
    report(r[:2] == q[:2] and r[3] & 0x0F == 3, "DNS query with control bytes in a label: NXDOMAIN")

    # 8. 5,000 SOAP logins (keep-alive, 4 connections): RSS settles within a bound.
    before = rss_kib(pid)
    login = ("<?xml version='1.0' encoding='UTF-8'?><soap:Envelope xmlns:soap="
             "'http://www.w3.org/2003/05/soap-envelope'><soap:Body><ns1:login xmlns:ns1="
             "'urn:cisco:epas:soap'><ns1:username>alice</ns1:username><ns1:password>lab"
             "</ns1:password></ns1:login></soap:Body></soap:Envelope>").encode()
    req = (b"POST /EPASSoap/service/v80 HTTP/1.1\r\nHost: imp1.example.com\r\n"
           b"Content-Type: application/soap+xml; charset=utf-8\r\nContent-Length: "
           + str(len(login)).encode() + b"\r\n\r\n" + login)
    keys, errors = [], []

    def worker(n):
        try:
            c = tls(*soap, "imp1.example.com", ca)
            c.settimeout(10)
            buf = b""
            for _ in range(n):
                c.sendall(req)
                while b"</soap:Envelope>" not in buf and b"</env:Envelope>" not in buf:
                    chunk = c.recv(65536)
                    if not chunk:
                        raise OSError("closed")
                    buf += chunk
                body, _, buf = buf.partition(b"Envelope>")
                i = body.find(b"sk-")
                if i >= 0:
                    keys.append(body[i:i + 35].decode(errors="replace"))
                # The rest of the closing tag's line is not part of the next answer.
                buf = buf[buf.find(b"HTTP/1.1"):] if b"HTTP/1.1" in buf else b""
            c.close()
        except Exception as e:  # noqa: BLE001 - reported as a failure below
            errors.append(repr(e))

    t0 = time.time()
    threads = [threading.Thread(target=worker, args=(1250,)) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    took = time.time() - t0
    report(not errors and len(keys) == 5000,
           f"5,000 SOAP logins in {round(took, 1)} s ({len(keys)} keys, errors {errors[:2]})")
    uniq = len(set(keys))
    report(uniq == len(keys) and all(len(k) == 35 for k in keys),
           f"session keys: {uniq} distinct, 128 bits each (e.g. {keys[0] if keys else None})")
    time.sleep(2)
    after = rss_kib(pid)
    print(f"figure rss_kib before={before} after_logins={after}", flush=True)
    report(after - before < 32 * 1024, f"RSS after 5,000 logins: {after // 1024} MiB (grew {(after - before) // 1024} MiB, bound 32)")
    now_fds = fds(pid)
    report(now_fds <= base_fds + 8, f"file descriptors back to {now_fds} (were {base_fds})")


if __name__ == "__main__":
    main()
