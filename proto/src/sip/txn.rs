//! SIP transactions (RFC 3261 §17) as sans-IO state machines: the client and server
//! transactions for INVITE and for every other method, with timers A–K. Time is a
//! [`Duration`] since any fixed origin (simulated time in the lab); the caller feeds
//! responses, requests and timeouts, and drains [`TxnOutput`]s.
//!
//! T1, T2 and T4 come from the device's cnf.xml (`timerT1`, `timerT2`) where it sets them,
//! else the RFC defaults. On a reliable transport (TCP, TLS) nothing is retransmitted and the
//! waiting timers D, I, J and K are zero (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2).

use std::collections::VecDeque;
use std::time::Duration;

use super::Message;

/// Timer values (§17.1.1.1, Table 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate, 500 ms by default.
    pub t1: Duration,
    /// Longest retransmit interval of non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Longest time a message stays in the network, 5 s.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// What a transaction asks of its user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOutput {
    /// Send this message to the peer (a first send or a retransmission).
    Send(Message),
    /// A response for the transaction user (client transactions).
    Response(Message),
    /// Timer B or F fired: no final response came (the TU treats it as 408, §8.1.3.1).
    Timeout,
    /// An ACK for a non-2xx final response arrived (server INVITE transactions).
    Acked,
    /// The server transaction gave up on an ACK (Timer H).
    NoAck,
    /// The transaction is over and can be dropped.
    Terminated,
}

/// Client transaction states (§17.1.1, §17.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, nothing heard.
    Calling,
    /// Non-INVITE sent, nothing heard.
    Trying,
    /// A provisional response came.
    Proceeding,
    /// A final response came; absorbing retransmissions.
    Completed,
    /// Over.
    Terminated,
}

/// A client transaction.
#[derive(Debug)]
pub struct ClientTxn {
    request: Message,
    invite: bool,
    reliable: bool,
    timers: Timers,
    state: ClientState,
    /// Retransmission (A/E): when, and the interval used last.
    retransmit: Option<(Duration, Duration)>,
    /// Timeout (B/F) or the Completed wait (D/K).
    expiry: Option<Duration>,
    /// The ACK built for a non-2xx final response (INVITE).
    ack: Option<Message>,
    out: VecDeque<TxnOutput>,
}

impl ClientTxn {
    /// Starts a transaction for `request` (with its Via branch already set): it is sent at
    /// once.
    pub fn new(now: Duration, request: Message, reliable: bool, timers: Timers) -> Self {
        let invite = request.method() == Some("INVITE");
        let mut out = VecDeque::new();
        out.push_back(TxnOutput::Send(request.clone()));
        Self {
            retransmit: (!reliable).then_some((now + timers.t1, timers.t1)),
            expiry: Some(now + timers.t1 * 64),
            state: if invite { ClientState::Calling } else { ClientState::Trying },
            request,
            invite,
            reliable,
            timers,
            ack: None,
            out,
        }
    }

    /// The request.
    pub fn request(&self) -> &Message {
        &self.request
    }

    /// The state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// Whether `resp` belongs to this transaction (§17.1.3: top Via branch and CSeq method).
    pub fn matches(&self, resp: &Message) -> bool {
        let branch = |m: &Message| m.top_via().and_then(|v| v.branch().map(str::to_owned));
        branch(resp).is_some()
            && branch(resp) == branch(&self.request)
            && resp.cseq().map(|(_, m)| m.to_owned())
                == self.request.cseq().map(|(_, m)| m.to_owned())
    }

    /// A response matched to this transaction.
    pub fn on_response(&mut self, now: Duration, resp: Message) {
        let Some(code) = resp.code() else { return };
        match (self.state, code) {
            (ClientState::Terminated, _) => {}
            (ClientState::Completed, _) => {
                // A retransmitted final response: the ACK again (INVITE), else absorbed.
                if let Some(ack) = self.ack.clone()
                    && code >= 300
                {
                    self.out.push_back(TxnOutput::Send(ack));
                }
            }
            (_, 100..=199) => {
                if self.state != ClientState::Proceeding {
                    self.state = ClientState::Proceeding;
                    if self.invite {
                        // §17.1.1.2: no more retransmissions once something is heard, and
                        // Timer B only runs in Calling: a ringing call waits for its answer.
                        self.retransmit = None;
                        self.expiry = None;
                    }
                    // §17.1.2.2: Timer E runs on, reset to T2 each time it fires.
                }
                self.out.push_back(TxnOutput::Response(resp));
            }
            (_, 200..=299) if self.invite => {
                // The TU acknowledges 2xx itself (§13.2.2.4).
                self.out.push_back(TxnOutput::Response(resp));
                self.terminate();
            }
            (_, _) => {
                self.retransmit = None;
                if self.invite {
                    let ack = self.ack_for(&resp);
                    self.out.push_back(TxnOutput::Send(ack.clone()));
                    self.ack = Some(ack);
                }
                self.out.push_back(TxnOutput::Response(resp));
                self.state = ClientState::Completed;
                // Timer D (≥ 32 s) or K (T4); zero on reliable transports.
                let wait = match (self.reliable, self.invite) {
                    (true, _) => Duration::ZERO,
                    (false, true) => Duration::from_secs(32),
                    (false, false) => self.timers.t4,
                };
                self.expiry = Some(now + wait);
                if wait.is_zero() {
                    self.terminate();
                }
            }
        }
    }

    /// §17.1.1.3: the ACK for a non-2xx final response: the request's Request-URI, top Via,
    /// From, Call-ID, CSeq number and Route; the response's To.
    fn ack_for(&self, resp: &Message) -> Message {
        let uri = match &self.request.start {
            super::Start::Request { uri, .. } => uri.clone(),
            super::Start::Response { .. } => String::new(),
        };
        let mut ack = Message::request("ACK", &uri);
        if let Some(v) = self.request.get("Via") {
            ack.push("Via", v);
        }
        ack.push("Max-Forwards", "70");
        for h in ["From"] {
            if let Some(v) = self.request.get(h) {
                ack.push(h, v);
            }
        }
        if let Some(t) = resp.get("To") {
            ack.push("To", t);
        }
        if let Some(c) = self.request.call_id() {
            ack.push("Call-ID", c);
        }
        if let Some((n, _)) = self.request.cseq() {
            ack.push("CSeq", format!("{n} ACK"));
        }
        for r in self.request.all("Route") {
            ack.push("Route", r);
        }
        ack
    }

    fn terminate(&mut self) {
        self.state = ClientState::Terminated;
        self.retransmit = None;
        self.expiry = None;
        self.out.push_back(TxnOutput::Terminated);
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.expiry.is_some_and(|e| e <= now) {
            if self.state != ClientState::Completed {
                self.out.push_back(TxnOutput::Timeout);
            }
            return self.terminate();
        }
        if let Some((at, interval)) = self.retransmit
            && at <= now
        {
            // A: doubling; E: doubling up to T2 (T2 steady once proceeding).
            let next = if self.invite { interval * 2 } else { (interval * 2).min(self.timers.t2) };
            let next = if self.state == ClientState::Proceeding { self.timers.t2 } else { next };
            self.retransmit = Some((now + next, next));
            self.out.push_back(TxnOutput::Send(self.request.clone()));
        }
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Duration> {
        [self.retransmit.map(|(at, _)| at), self.expiry].into_iter().flatten().min()
    }

    /// Next output.
    pub fn poll_output(&mut self) -> Option<TxnOutput> {
        self.out.pop_front()
    }
}

/// Server transaction states (§17.2.1, §17.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE received, no response yet.
    Trying,
    /// A provisional response was sent (INVITE starts here).
    Proceeding,
    /// A final response was sent.
    Completed,
    /// The ACK came (INVITE).
    Confirmed,
    /// Over.
    Terminated,
}

/// A server transaction.
#[derive(Debug)]
pub struct ServerTxn {
    invite: bool,
    reliable: bool,
    timers: Timers,
    state: ServerState,
    last: Option<Message>,
    /// Timer G: response retransmission (INVITE, unreliable).
    retransmit: Option<(Duration, Duration)>,
    /// Timer H, I or J.
    expiry: Option<Duration>,
    out: VecDeque<TxnOutput>,
}

impl ServerTxn {
    /// A transaction for a request just received (its method decides the kind).
    pub fn new(request: &Message, reliable: bool, timers: Timers) -> Self {
        let invite = request.method() == Some("INVITE");
        Self {
            invite,
            reliable,
            timers,
            state: if invite { ServerState::Proceeding } else { ServerState::Trying },
            last: None,
            retransmit: None,
            expiry: None,
            out: VecDeque::new(),
        }
    }

    /// The state.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// The transaction user responds.
    pub fn respond(&mut self, now: Duration, resp: Message) {
        let Some(code) = resp.code() else { return };
        if matches!(
            self.state,
            ServerState::Completed | ServerState::Confirmed | ServerState::Terminated
        ) {
            return;
        }
        self.out.push_back(TxnOutput::Send(resp.clone()));
        self.last = Some(resp);
        match code {
            100..=199 => self.state = ServerState::Proceeding,
            200..=299 if self.invite => {
                // 2xx retransmission is the TU's (§13.3.1.4).
                self.terminate();
            }
            _ => {
                self.state = ServerState::Completed;
                if self.invite {
                    if !self.reliable {
                        self.retransmit = Some((now + self.timers.t1, self.timers.t1));
                    }
                    self.expiry = Some(now + self.timers.t1 * 64);
                } else {
                    let j = if self.reliable { Duration::ZERO } else { self.timers.t1 * 64 };
                    self.expiry = Some(now + j);
                    if j.is_zero() {
                        self.terminate();
                    }
                }
            }
        }
    }

    /// The same request again (a retransmission) or, for INVITE, its ACK.
    pub fn on_request(&mut self, now: Duration, req: &Message) {
        if req.method() == Some("ACK") {
            if self.invite && self.state == ServerState::Completed {
                self.state = ServerState::Confirmed;
                self.retransmit = None;
                self.out.push_back(TxnOutput::Acked);
                let i = if self.reliable { Duration::ZERO } else { self.timers.t4 };
                self.expiry = Some(now + i);
                if i.is_zero() {
                    self.terminate();
                }
            }
            return;
        }
        if matches!(self.state, ServerState::Proceeding | ServerState::Completed)
            && let Some(last) = self.last.clone()
        {
            self.out.push_back(TxnOutput::Send(last));
        }
    }

    fn terminate(&mut self) {
        self.state = ServerState::Terminated;
        self.retransmit = None;
        self.expiry = None;
        self.out.push_back(TxnOutput::Terminated);
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.expiry.is_some_and(|e| e <= now) {
            if self.state == ServerState::Completed && self.invite {
                self.out.push_back(TxnOutput::NoAck);
            }
            return self.terminate();
        }
        if let Some((at, interval)) = self.retransmit
            && at <= now
        {
            let next = (interval * 2).min(self.timers.t2);
            self.retransmit = Some((now + next, next));
            if let Some(last) = self.last.clone() {
                self.out.push_back(TxnOutput::Send(last));
            }
        }
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Duration> {
        [self.retransmit.map(|(at, _)| at), self.expiry].into_iter().flatten().min()
    }

    /// Next output.
    pub fn poll_output(&mut self) -> Option<TxnOutput> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn req(method: &str) -> Message {
        Message::request(method, "sip:bob@example.com")
            .with("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1")
            .with("From", "<sip:alice@example.com>;tag=a")
            .with("To", "<sip:bob@example.com>")
            .with("Call-ID", "c1")
            .with("CSeq", format!("1 {method}"))
    }

    fn drain<T>(mut f: impl FnMut() -> Option<T>) -> Vec<T> {
        std::iter::from_fn(&mut f).collect()
    }

    fn sends(out: &[TxnOutput]) -> usize {
        out.iter().filter(|o| matches!(o, TxnOutput::Send(_))).count()
    }

    /// Fires every deadline up to `until`; returns the times requests were (re)sent.
    fn run_client(t: &mut ClientTxn, until: Duration) -> (Vec<Duration>, Vec<TxnOutput>) {
        let mut at = Vec::new();
        let mut all = Vec::new();
        while let Some(d) = t.poll_timeout().filter(|d| *d <= until) {
            t.handle_timeout(d);
            for o in drain(|| t.poll_output()) {
                if matches!(o, TxnOutput::Send(_)) {
                    at.push(d);
                }
                all.push(o);
            }
        }
        (at, all)
    }

    #[test]
    fn timer_a_doubles_and_b_times_out_at_64_t1() {
        let mut t = ClientTxn::new(ms(0), req("INVITE"), false, Timers::default());
        assert_eq!(sends(&drain(|| t.poll_output())), 1);
        let (at, out) = run_client(&mut t, ms(40_000));
        // 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; B at 32 s.
        assert_eq!(at, [500, 1500, 3500, 7500, 15_500, 31_500].map(ms));
        assert!(out.contains(&TxnOutput::Timeout) && t.state() == ClientState::Terminated);
        // Proceeding: no Timer B, however long it rings.
        let mut t = ClientTxn::new(ms(0), req("INVITE"), false, Timers::default());
        drain(|| t.poll_output());
        t.on_response(ms(100), req("INVITE").response(180, "Ringing", Some("b")));
        drain(|| t.poll_output());
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn timer_e_caps_at_t2_and_steadies_when_proceeding() {
        let mut t = ClientTxn::new(ms(0), req("REGISTER"), false, Timers::default());
        drain(|| t.poll_output());
        let (at, _) = run_client(&mut t, ms(12_000));
        assert_eq!(at, [500, 1500, 3500, 7500, 11_500].map(ms));
        let trying = req("REGISTER").response(100, "Trying", None);
        t.on_response(ms(12_000), trying);
        assert_eq!(t.state(), ClientState::Proceeding);
        let (at, out) = run_client(&mut t, ms(40_000));
        assert_eq!(at, [15_500, 19_500, 23_500, 27_500, 31_500].map(ms));
        assert!(out.contains(&TxnOutput::Timeout), "F at 32 s");
    }

    #[test]
    fn non_2xx_to_invite_is_acked_and_absorbed_until_d() {
        let mut t = ClientTxn::new(ms(0), req("INVITE"), false, Timers::default());
        drain(|| t.poll_output());
        let busy = req("INVITE").response(486, "Busy Here", Some("b"));
        assert!(t.matches(&busy));
        t.on_response(ms(100), busy.clone());
        let out = drain(|| t.poll_output());
        let TxnOutput::Send(ack) = &out[0] else { panic!("{out:?}") };
        assert_eq!(ack.method(), Some("ACK"));
        assert_eq!(ack.get("CSeq"), Some("1 ACK"));
        assert!(ack.get("To").unwrap().contains("tag=b"));
        assert!(matches!(out[1], TxnOutput::Response(_)));
        // The retransmitted 486 gets the ACK again; no more INVITEs.
        t.on_response(ms(600), busy);
        assert_eq!(sends(&drain(|| t.poll_output())), 1);
        let (at, out) = run_client(&mut t, ms(40_000));
        assert!(at.is_empty() && out == [TxnOutput::Terminated]);
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn reliable_transports_do_not_retransmit_and_end_at_once() {
        let mut t = ClientTxn::new(ms(0), req("OPTIONS"), true, Timers::default());
        drain(|| t.poll_output());
        assert_eq!(t.poll_timeout(), Some(ms(32_000)));
        t.on_response(ms(10), req("OPTIONS").response(200, "OK", Some("x")));
        let out = drain(|| t.poll_output());
        assert!(matches!(out[..], [TxnOutput::Response(_), TxnOutput::Terminated]), "{out:?}");
    }

    #[test]
    fn a_response_of_another_transaction_does_not_match() {
        let t = ClientTxn::new(ms(0), req("REGISTER"), false, Timers::default());
        let mut other = req("REGISTER").response(200, "OK", None);
        other.set("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK2");
        assert!(!t.matches(&other));
        let mut other = req("REGISTER").response(200, "OK", None);
        other.set("CSeq", "1 OPTIONS");
        assert!(!t.matches(&other));
    }

    #[test]
    fn server_invite_retransmits_final_until_ack_g_h_i() {
        let r = req("INVITE");
        let mut s = ServerTxn::new(&r, false, Timers::default());
        s.respond(ms(0), r.response(100, "Trying", None));
        s.on_request(ms(200), &r);
        assert_eq!(sends(&drain(|| s.poll_output())), 2, "the 100 again on a retransmission");
        s.respond(ms(1000), r.response(480, "Temporarily Unavailable", Some("t")));
        drain(|| s.poll_output());
        let mut at = Vec::new();
        while let Some(d) = s.poll_timeout().filter(|d| *d <= ms(5000)) {
            s.handle_timeout(d);
            at.extend(
                drain(|| s.poll_output())
                    .iter()
                    .filter(|o| matches!(o, TxnOutput::Send(_)))
                    .map(|_| d),
            );
        }
        // G: 0.5, 1, 2, 4, 4 s after the response.
        assert_eq!(at, [1500, 2500, 4500].map(ms));
        let mut ack = r.clone();
        ack.start =
            crate::sip::Start::Request { method: "ACK".into(), uri: "sip:bob@example.com".into() };
        s.on_request(ms(5000), &ack);
        assert_eq!(drain(|| s.poll_output()), [TxnOutput::Acked]);
        assert_eq!(s.state(), ServerState::Confirmed);
        s.handle_timeout(ms(10_000)); // I = T4
        assert_eq!(s.state(), ServerState::Terminated);
        // Without an ACK: H at 64·T1.
        let mut s = ServerTxn::new(&r, false, Timers::default());
        s.respond(ms(0), r.response(404, "Not Found", Some("t")));
        while let Some(d) = s.poll_timeout() {
            s.handle_timeout(d);
        }
        assert!(drain(|| s.poll_output()).contains(&TxnOutput::NoAck));
    }

    #[test]
    fn server_non_invite_answers_retransmissions_until_j() {
        let r = req("REGISTER");
        let mut s = ServerTxn::new(&r, false, Timers::default());
        s.on_request(ms(10), &r);
        assert!(drain(|| s.poll_output()).is_empty(), "nothing to repeat yet");
        s.respond(ms(20), r.response(200, "OK", Some("t")));
        s.on_request(ms(600), &r);
        assert_eq!(sends(&drain(|| s.poll_output())), 2);
        assert_eq!(s.poll_timeout(), Some(ms(32_020)));
        s.handle_timeout(ms(32_020));
        assert_eq!(s.state(), ServerState::Terminated);
    }
}
