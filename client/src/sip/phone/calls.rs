//! The calls' side of the phone (SPEC CC4, CC6): what the user does, the calls' and watches'
//! messages onto the active connection, and requests and responses from the node handed to
//! them.

use super::*;

impl Phone {
    /// The user does something with calls (SPEC CC4, CC5).
    pub fn act(&mut self, now: Time, a: &CallAction) {
        self.clock = now;
        let ctx = self.ctx();
        match a {
            CallAction::Watch { .. } if ctx.mode == Mode::Unregistered => {
                self.event(ClientEvent::FeatureRefused {
                    feature: "watch".into(),
                    reason: "not registered".into(),
                });
            }
            CallAction::Watch { to } => self.watches.watch(now, &ctx, to),
            _ => self.calls.act(now, &ctx, a),
        }
        self.flush_calls();
    }

    /// Sends what the calls produced on the active connection, and reports their events.
    pub(super) fn flush_calls(&mut self) {
        let stream = self.active_stream();
        let mut sends = std::mem::take(&mut self.calls.sends);
        sends.append(&mut self.watches.sends);
        for send in sends {
            let msgs = match send {
                Send::Request(mut t) => {
                    let m = sends_of(&mut t);
                    self.call_txns.push(*t);
                    m
                }
                Send::Message(m) => vec![m],
            };
            for m in msgs {
                if m.code().is_some() && self.udp() {
                    self.uas.on_response(self.clock, &m);
                }
                match stream {
                    Some(id) => self.out.push_back(Output::StreamSend {
                        id,
                        bytes: m.to_bytes(),
                        summary: summary(&m),
                    }),
                    // No connection (a failover under way): held until the phone registers
                    // again, a bounded few.
                    None if self.held.len() < MAX_HELD => self.held.push_back(m),
                    None => {}
                }
            }
        }
        for e in std::mem::take(&mut self.calls.events) {
            self.out.push_back(Output::Event(e));
        }
        if std::mem::take(&mut self.calls.rang) && self.auto_answer {
            self.answer_due = true;
        }
        for e in std::mem::take(&mut self.watches.events) {
            self.out.push_back(Output::Event(e));
        }
        self.out.extend(std::mem::take(&mut self.calls.media));
    }

    /// The open connection of the registration, if any.
    pub(super) fn active_stream(&self) -> Option<ConnId> {
        self.legs.iter().find(|l| l.role == Role::Active && l.open).and_then(|l| l.stream)
    }

    /// Sends `msgs` on the active connection (retransmissions: nothing is held for later).
    pub(super) fn send_active(&mut self, msgs: Vec<Message>) {
        let stream = self.active_stream();
        let Some(id) = stream else { return };
        for m in msgs {
            self.out.push_back(Output::StreamSend {
                id,
                bytes: m.to_bytes(),
                summary: summary(&m),
            });
        }
    }

    /// Moves the calls' transactions on: responses to the calls, timeouts.
    pub(super) fn drain_call_txns(&mut self, now: Time) {
        let ctx = self.ctx();
        let stream = self.active_stream();
        for t in &mut self.call_txns {
            let call_id = t.request().call_id().unwrap_or("").to_owned();
            while let Some(o) = t.poll_output() {
                match o {
                    TxnOutput::Send(m) => {
                        if let Some(id) = stream {
                            self.out.push_back(Output::StreamSend {
                                id,
                                bytes: m.to_bytes(),
                                summary: summary(&m),
                            });
                        }
                    }
                    TxnOutput::Response(r) if self.watches.owns(&call_id) => {
                        self.watches.on_response(now, &r)
                    }
                    TxnOutput::Response(r) => self.calls.on_response(now, &ctx, &r),
                    TxnOutput::Timeout if self.watches.owns(&call_id) => {
                        self.watches.on_timeout(&call_id)
                    }
                    TxnOutput::Timeout => self.calls.on_timeout(now, &ctx, &call_id),
                    _ => {}
                }
            }
        }
        self.call_txns.retain(|t| t.state() != sip::txn::ClientState::Terminated);
        self.flush_calls();
    }

    /// One whole message from leg `i`'s node.
    pub(super) fn on_message(&mut self, now: Time, i: usize, b: &[u8]) {
        let Some(m) = sip::read(b) else { return };
        let leg = &mut self.legs[i];
        if m.code().is_some() {
            if let Some(t) = self.ping_txn.as_mut().filter(|t| t.matches(&m)) {
                t.on_response(now, m);
                self.ping_txn = None; // the pong
            } else if let Some(t) = leg.txn.as_mut().filter(|t| t.matches(&m)) {
                t.on_response(now, m);
                self.drain_txn(now, i);
            } else if let Some(t) = self.call_txns.iter_mut().find(|t| t.matches(&m)) {
                t.on_response(now, m);
                self.drain_call_txns(now);
            } else if m.cseq().is_some_and(|(_, meth)| meth == "INVITE")
                && m.code().is_some_and(|c| (200..300).contains(&c))
            {
                // A 2xx retransmitted after its transaction ended: the call ACKs it again
                // (§13.2.2.4), or its ACK was lost and the callee never hears it.
                let ctx = self.ctx();
                self.calls.on_response(now, &ctx, &m);
                self.flush_calls();
            }
        } else if sip::parse(b).is_ok() {
            // A request from the node: a call (CC1).
            let stream = leg.stream;
            if self.udp() {
                match self.uas.on_request(now, &m) {
                    Seen::New => {}
                    Seen::Again(resend) => {
                        if let (Some(r), Some(id)) = (resend, stream) {
                            let (bytes, summary) = (r.to_bytes(), summary(&r));
                            self.out.push_back(Output::StreamSend { id, bytes, summary });
                        }
                        return;
                    }
                }
            }
            let ctx = self.ctx();
            let notify =
                m.method() == Some("NOTIFY") && m.call_id().is_some_and(|c| self.watches.owns(c));
            let answer = if notify {
                Some(self.watches.on_notify(&m, &ctx))
            } else {
                self.calls.on_request(now, &ctx, &m)
            };
            if let Some(r) = answer
                && let Some(id) = stream
            {
                if self.udp() {
                    self.uas.on_response(now, &r);
                }
                self.out.push_back(Output::StreamSend {
                    id,
                    bytes: r.to_bytes(),
                    summary: summary(&r),
                });
            }
            self.flush_calls();
        }
    }
}
