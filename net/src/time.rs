//! Timers the simulation can see (issue 19, event-driven time).
//!
//! turmoil leaves a simulated host alone while it has nothing to do, and jumps the clock over
//! stretches in which no host has; for that it must know every deadline a host's software
//! waits on. These are tokio's timers ([`sleep`], [`sleep_until`], [`timeout`],
//! [`timeout_at`], and [`HyperTimer`] for hyper's), each registered with
//! [`turmoil::Deadline`] while it is pending. Outside a simulation (live mode, unit tests) the
//! registration is skipped and they are tokio's timers and nothing more.
//!
//! The wrappers poll tokio's own futures in tokio's order, so a run is the same with or
//! without the registration. `clippy.toml` forbids tokio's functions elsewhere; a timer that
//! slips past (a library's own) and fires while its host is left alone fails the run with a
//! message naming the host, rather than firing late.

#![allow(clippy::disallowed_methods)] // the one place that calls tokio's timers

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub use tokio::time::Instant;
pub use tokio::time::error::Elapsed;
use turmoil::Deadline;

pin_project_lite::pin_project! {
    /// [`tokio::time::Sleep`], seen by the simulation.
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct Sleep {
        #[pin]
        inner: tokio::time::Sleep,
        seen: Option<Deadline>,
    }
}

/// Waits until `duration` has passed ([`tokio::time::sleep`]).
pub fn sleep(duration: Duration) -> Sleep {
    seen(tokio::time::sleep(duration))
}

/// Waits until `deadline` ([`tokio::time::sleep_until`]).
pub fn sleep_until(deadline: Instant) -> Sleep {
    seen(tokio::time::sleep_until(deadline))
}

fn seen(inner: tokio::time::Sleep) -> Sleep {
    let seen = Deadline::register(inner.deadline());
    Sleep { inner, seen }
}

impl Sleep {
    /// When it fires.
    pub fn deadline(&self) -> Instant {
        self.inner.deadline()
    }

    /// Whether it has fired.
    pub fn is_elapsed(&self) -> bool {
        self.inner.is_elapsed()
    }

    /// Moves it to `deadline` ([`tokio::time::Sleep::reset`]).
    pub fn reset(self: Pin<&mut Self>, deadline: Instant) {
        let me = self.project();
        me.inner.reset(deadline);
        match me.seen {
            Some(d) => d.reset(deadline),
            None => *me.seen = Deadline::register(deadline),
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let me = self.project();
        let out = me.inner.poll(cx);
        if out.is_ready() {
            *me.seen = None;
        }
        out
    }
}

pin_project_lite::pin_project! {
    /// [`tokio::time::Timeout`], seen by the simulation.
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct Timeout<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        seen: Option<Deadline>,
    }
}

/// `future`, given up after `duration` ([`tokio::time::timeout`]).
pub fn timeout<F: IntoFuture>(duration: Duration, future: F) -> Timeout<F::IntoFuture> {
    let seen = if Deadline::active() {
        Instant::now().checked_add(duration).and_then(Deadline::register)
    } else {
        None
    };
    Timeout { inner: tokio::time::timeout(duration, future), seen }
}

/// `future`, given up at `deadline` ([`tokio::time::timeout_at`]).
pub fn timeout_at<F: IntoFuture>(deadline: Instant, future: F) -> Timeout<F::IntoFuture> {
    Timeout { inner: tokio::time::timeout_at(deadline, future), seen: Deadline::register(deadline) }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let me = self.project();
        let out = me.inner.poll(cx);
        if out.is_ready() {
            *me.seen = None;
        }
        out
    }
}

/// hyper's timer on [`Sleep`] (hyper-util's `TokioTimer`, seen by the simulation).
#[derive(Clone, Copy, Debug, Default)]
pub struct HyperTimer;

pin_project_lite::pin_project! {
    struct HyperSleep {
        #[pin]
        inner: Sleep,
    }
}

impl Future for HyperSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().inner.poll(cx)
    }
}

impl hyper::rt::Sleep for HyperSleep {}

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep { inner: sleep(duration) })
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep { inner: sleep_until(deadline.into()) })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: std::time::Instant) {
        if let Some(sleep) = sleep.as_mut().downcast_mut_pin::<HyperSleep>() {
            sleep.project().inner.reset(new_deadline.into());
        }
    }

    fn now(&self) -> std::time::Instant {
        Instant::now().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_simulation_they_are_tokios_timers() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        rt.block_on(async {
            let t0 = Instant::now();
            sleep(Duration::from_secs(3)).await;
            assert_eq!(Instant::now() - t0, Duration::from_secs(3));
            let r = timeout(Duration::from_secs(1), std::future::pending::<()>()).await;
            assert!(r.is_err());
            assert_eq!(timeout(Duration::from_secs(1), async { 7 }).await, Ok(7));
            let s = sleep(Duration::from_secs(10));
            tokio::pin!(s);
            s.as_mut().reset(Instant::now() + Duration::from_secs(2));
            let t1 = Instant::now();
            s.await;
            assert_eq!(Instant::now() - t1, Duration::from_secs(2));
        });
    }
}
