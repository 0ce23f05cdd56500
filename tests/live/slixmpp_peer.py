#!/usr/bin/python3
"""Real XMPP clients (slixmpp, Debian's python3-slixmpp) for the live checks.

  pair HOST PORT CA JID1 JID2 PASSWORD
      Both sign in (STARTTLS verifying CA, SASL PLAIN), fetch the roster and send presence;
      each waits to see the other's presence; JID1 sends JID2 a message. Prints one line per
      fact seen: `presence JIDa sees JIDb`, `message JID2 got BODY`, `bound JID`.
  across HOST1 PORT1 HOST2 PORT2 CA JID1 JID2 PASSWORD
      The same with JID1 signing in at HOST1:PORT1 (Expressway-E's XMPP, from outside) and
      JID2 at HOST2:PORT2 (the IM&P node, inside).
  federate HOST1 PORT1 JID1 PASSWORD1 HOST2 PORT2 JID2 PASSWORD2 CA
      Two users of different domains (federated servers) sign in, each subscribes to the
      other and approves the other's request; each waits to see the other's presence, then
      each sends the other a message. Prints the same facts as `pair`.
  echo HOST PORT CA JID PASSWORD SECONDS
      Signs in and answers every chat message with `pong: BODY`, printing `got FROM BODY`;
      stops after SECONDS.

Exits 0 when everything it waited for happened, 1 otherwise (timeouts included).
"""

import asyncio
import logging
import sys

import slixmpp


class Peer(slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca, log):
        super().__init__(jid, password, sasl_mech="PLAIN")
        self.ca_certs = ca
        self.log = log
        self.ready = asyncio.get_event_loop().create_future()
        self.seen = set()
        self.messages = []
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("presence_available", self.on_presence)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("failed_auth", lambda _: self.fail("SASL refused"))
        self.add_event_handler("connection_failed", lambda e: self.fail(f"connection failed: {e}"))

    def fail(self, why):
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(why))

    async def on_start(self, _event):
        await self.get_roster()
        self.send_presence()
        self.log(f"bound {self.boundjid.full}")
        if not self.ready.done():
            self.ready.set_result(True)

    def on_presence(self, p):
        who = p["from"].bare
        if who != self.boundjid.bare:
            self.seen.add(who)

    def on_message(self, m):
        if m["type"] in ("chat", "normal") and m["body"]:
            self.messages.append((m["from"].bare, m["body"]))


async def wait_for(pred, seconds):
    for _ in range(int(seconds * 20)):
        if pred():
            return True
        await asyncio.sleep(0.05)
    return pred()


async def pair(at1, at2, ca, jid1, jid2, password):
    out = []
    a, b = Peer(jid1, password, ca, out.append), Peer(jid2, password, ca, out.append)
    a.connect(address=at1)
    b.connect(address=at2)
    ok = True
    try:
        await asyncio.wait_for(asyncio.gather(a.ready, b.ready), 10)
    except Exception as e:  # noqa: BLE001 - reported, then a failure
        out.append(f"sign-in failed: {e}")
        ok = False
    if ok:
        bare1, bare2 = jid1.split("/")[0], jid2.split("/")[0]
        if await wait_for(lambda: bare2 in a.seen and bare1 in b.seen, 10):
            out.append(f"presence {bare1} sees {bare2}")
            out.append(f"presence {bare2} sees {bare1}")
        else:
            out.append(f"presence missing: {bare1} saw {sorted(a.seen)}, {bare2} saw {sorted(b.seen)}")
            ok = False
        a.send_message(mto=bare2, mbody="hello from slixmpp", mtype="chat")
        if await wait_for(lambda: b.messages, 10):
            out.append(f"message {bare2} got {b.messages[0][1]} from {b.messages[0][0]}")
        else:
            out.append("message not delivered")
            ok = False
    for p in (a, b):
        p.disconnect()
    print("\n".join(out), flush=True)
    return ok


async def federate(at1, jid1, pw1, at2, jid2, pw2, ca):
    out = []
    a, b = Peer(jid1, pw1, ca, out.append), Peer(jid2, pw2, ca, out.append)
    for p in (a, b):
        p.auto_authorize = True
        p.auto_subscribe = True
    a.connect(address=at1)
    b.connect(address=at2)
    try:
        await asyncio.wait_for(asyncio.gather(a.ready, b.ready), 10)
    except Exception as e:  # noqa: BLE001 - reported, then a failure
        print(f"sign-in failed: {e}", flush=True)
        return False
    ok = True
    bare1, bare2 = jid1.split("/")[0], jid2.split("/")[0]
    a.send_presence_subscription(pto=bare2)
    b.send_presence_subscription(pto=bare1)
    if await wait_for(lambda: bare2 in a.seen and bare1 in b.seen, 20):
        out.append(f"presence {bare1} sees {bare2}")
        out.append(f"presence {bare2} sees {bare1}")
    else:
        out.append(f"presence missing: {bare1} saw {sorted(a.seen)}, {bare2} saw {sorted(b.seen)}")
        ok = False
    a.send_message(mto=bare2, mbody="hello across domains", mtype="chat")
    b.send_message(mto=bare1, mbody="hello back", mtype="chat")
    if await wait_for(lambda: b.messages and a.messages, 10):
        out.append(f"message {bare2} got {b.messages[0][1]} from {b.messages[0][0]}")
        out.append(f"message {bare1} got {a.messages[0][1]} from {a.messages[0][0]}")
    else:
        out.append(f"messages: {bare1} got {a.messages}, {bare2} got {b.messages}")
        ok = False
    for p in (a, b):
        p.disconnect()
    print("\n".join(out), flush=True)
    return ok


async def echo(host, port, ca, jid, password, seconds):
    out = []
    p = Peer(jid, password, ca, lambda line: print(line, flush=True))

    def answer(m):
        if m["type"] in ("chat", "normal") and m["body"]:
            print(f"got {m['from'].bare} {m['body']}", flush=True)
            p.send_message(mto=m["from"], mbody=f"pong: {m['body']}", mtype="chat")
            out.append(m["body"])

    p.add_event_handler("message", answer)
    p.connect(address=(host, port))
    try:
        await asyncio.wait_for(p.ready, 10)
    except Exception as e:  # noqa: BLE001
        print(f"sign-in failed: {e}", flush=True)
        return False
    print("ready", flush=True)
    await wait_for(lambda: out, seconds)
    await asyncio.sleep(0.5)
    p.disconnect()
    return bool(out)


def main(argv):
    logging.basicConfig(level=logging.CRITICAL)
    mode = argv[1]
    host, port, ca = argv[2], int(argv[3]), argv[4]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if mode == "pair":
        ok = loop.run_until_complete(pair((host, port), (host, port), ca, argv[5], argv[6], argv[7]))
    elif mode == "across":
        at2 = (argv[4], int(argv[5]))
        ok = loop.run_until_complete(pair((host, port), at2, argv[6], argv[7], argv[8], argv[9]))
    elif mode == "federate":
        at1, at2 = (argv[2], int(argv[3])), (argv[6], int(argv[7]))
        ok = loop.run_until_complete(federate(at1, argv[4], argv[5], at2, argv[8], argv[9], argv[10]))
    elif mode == "echo":
        ok = loop.run_until_complete(echo(host, port, ca, argv[5], argv[6], float(argv[7])))
    else:
        raise SystemExit(f"unknown mode {mode}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
