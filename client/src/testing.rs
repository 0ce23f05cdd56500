//! A harness that drives an engine against a scripted peer in virtual time (quinn-proto's
//! `tests/util.rs` habit): the test plays the network, the harness keeps the clock and jumps
//! it to the engine's next deadline, never further than the test allows.

use std::net::SocketAddr;

use crate::Time;
use crate::client::Client;
use crate::event::ClientEvent;
use crate::im::ImSession;
use crate::io::{ConnId, Input, Output};
use crate::sip::phone::Phone;

/// What the harness needs of an engine.
pub(crate) trait Engine {
    fn input(&mut self, now: Time, i: Input);
    fn timeout(&mut self, now: Time);
    fn output(&mut self) -> Option<Output>;
    fn deadline(&self) -> Option<Time>;
}

macro_rules! engine {
    ($t:ty) => {
        impl Engine for $t {
            fn input(&mut self, now: Time, i: Input) {
                self.handle_input(now, i);
            }
            fn timeout(&mut self, now: Time) {
                self.handle_timeout(now);
            }
            fn output(&mut self) -> Option<Output> {
                self.poll_output()
            }
            fn deadline(&self) -> Option<Time> {
                self.poll_timeout()
            }
        }
    };
}

engine!(Phone);
engine!(ImSession);
engine!(Client);

/// An engine, its virtual clock, and the outputs it has produced and the test not yet read.
pub(crate) struct Harness<E> {
    pub(crate) e: E,
    pub(crate) now: Time,
}

/// Most deadlines one `run_until` handles: an engine that keeps asking to be woken at the same
/// instant is a bug the test should see, not a hang.
const MAX_STEPS: usize = 10_000;

impl<E: Engine> Harness<E> {
    pub(crate) fn new(e: E) -> Self {
        Self { e, now: Time::ZERO }
    }

    /// Everything the engine has to say now.
    pub(crate) fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.e.output()).collect()
    }

    /// Feeds `i` at the current time and drains.
    pub(crate) fn input(&mut self, i: Input) -> Vec<Output> {
        self.e.input(self.now, i);
        self.drain()
    }

    /// Handles every deadline up to `t` in order, then leaves the clock at `t`.
    pub(crate) fn run_until(&mut self, t: Time) -> Vec<Output> {
        let mut out = self.drain();
        for _ in 0..MAX_STEPS {
            match self.e.deadline() {
                Some(d) if d <= t => {
                    self.now = self.now.max(d);
                    self.e.timeout(self.now);
                    out.extend(self.drain());
                }
                _ => {
                    self.now = t;
                    return out;
                }
            }
        }
        panic!("more than {MAX_STEPS} deadlines before {t:?}: the engine spins");
    }
}

/// The events among `out`.
pub(crate) fn events(out: &[Output]) -> Vec<ClientEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// The streams and datagram flows opened among `out`.
pub(crate) fn opened(out: &[Output]) -> Vec<(ConnId, SocketAddr)> {
    out.iter()
        .filter_map(|o| match o {
            Output::StreamOpen { id, to, .. } | Output::DatagramOpen { id, to, .. } => {
                Some((*id, *to))
            }
            _ => None,
        })
        .collect()
}

/// What was written to streams among `out`, with the stream.
pub(crate) fn sent(out: &[Output]) -> Vec<(ConnId, Vec<u8>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::StreamSend { id, bytes, .. } => Some((*id, bytes.clone())),
            _ => None,
        })
        .collect()
}
