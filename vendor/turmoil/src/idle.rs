//! uclab: event-driven simulated time.
//!
//! Upstream steps every host's tokio runtime every tick, whether the host
//! has work or not. This module lets [`crate::Sim`] leave a host alone for
//! the ticks in which nothing can happen to it, and jump the whole
//! simulation over ticks in which nothing can happen anywhere, with the
//! same outcome as stepping them one by one.
//!
//! A host has nothing to do in a tick when:
//! - none of its tasks was woken since its last tick ([`Flag`], the waker
//!   its `LocalSet` holds; message delivery, another host's write and timer
//!   firings all wake through it);
//! - none of its [`Deadline`]s falls in the tick (software registers every
//!   timer it waits on; a timer that fires while a host is left alone is
//!   reported as an error, never silently mistimed);
//! - its runtime has no tasks of its own (turmoil's loopback sends).
//!
//! A host left alone for `n` ticks is brought up to date before it next
//! runs ([`crate::rt::Rt`]): its clock is advanced by `n` ticks at once.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

use tokio::time::Instant;

/// The deadlines a host's software waits on.
#[derive(Default)]
pub(crate) struct Deadlines {
    at: BTreeMap<Instant, u32>,
}

impl Deadlines {
    fn add(&mut self, at: Instant) {
        *self.at.entry(at).or_default() += 1;
    }

    fn remove(&mut self, at: Instant) {
        if let Some(n) = self.at.get_mut(&at) {
            *n -= 1;
            if *n == 0 {
                self.at.remove(&at);
            }
        }
    }

    /// The earliest deadline.
    pub(crate) fn first(&self) -> Option<Instant> {
        self.at.keys().next().copied()
    }
}

pub(crate) type SharedDeadlines = Arc<Mutex<Deadlines>>;

thread_local! {
    /// The deadlines of the host whose software is running.
    static CURRENT: RefCell<Option<SharedDeadlines>> = const { RefCell::new(None) };
}

/// Runs `f` with `set` as the running host's deadlines.
pub(crate) fn enter<R>(set: &SharedDeadlines, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<SharedDeadlines>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = prev);
        }
    }
    let prev = CURRENT.with(|c| c.borrow_mut().replace(set.clone()));
    let _restore = Restore(prev);
    f()
}

/// A deadline the simulation sees: while it lives, its host is stepped in
/// the tick that reaches it.
///
/// Software registers every timer it waits on (a sleep, a timeout); drop
/// the registration when the timer is gone or has fired.
pub struct Deadline {
    set: SharedDeadlines,
    at: Instant,
}

impl Deadline {
    /// Registers `at` for the host whose software is running; `None`
    /// outside a simulation, where nothing needs to see it.
    pub fn register(at: Instant) -> Option<Deadline> {
        let set = CURRENT.with(|c| c.borrow().clone())?;
        lock(&set).add(at);
        Some(Deadline { set, at })
    }

    /// Whether software is running inside a simulated host (timers there
    /// should be registered).
    pub fn active() -> bool {
        CURRENT.with(|c| c.borrow().is_some())
    }

    /// Moves the deadline to `at`.
    pub fn reset(&mut self, at: Instant) {
        if at != self.at {
            let mut set = lock(&self.set);
            set.remove(self.at);
            set.add(at);
            self.at = at;
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        lock(&self.set).remove(self.at);
    }
}

impl std::fmt::Debug for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline").field("at", &self.at).finish()
    }
}

fn lock(set: &SharedDeadlines) -> std::sync::MutexGuard<'_, Deadlines> {
    set.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn first(set: &SharedDeadlines) -> Option<Instant> {
    lock(set).first()
}

/// The waker a host's `LocalSet` holds: records that a task was woken, and
/// passes the wake on to the runtime as upstream's waker would.
#[derive(Default)]
pub(crate) struct Flag {
    woken: AtomicBool,
    inner: Mutex<Option<Waker>>,
}

impl Flag {
    /// Passes wakes on to `waker` (the runtime's `block_on` waker).
    pub(crate) fn forward_to(&self, waker: &Waker) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !inner.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *inner = Some(waker.clone());
        }
    }

    /// The waker upstream would have used.
    pub(crate) fn forwarded(&self) -> Option<Waker> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn woken(&self) -> bool {
        self.woken.load(Ordering::Relaxed)
    }

    pub(crate) fn take(&self) -> bool {
        self.woken.swap(false, Ordering::Relaxed)
    }

    pub(crate) fn set(&self, woken: bool) {
        self.woken.store(woken, Ordering::Relaxed);
    }
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Relaxed);
        if let Some(w) = self.forwarded() {
            w.wake();
        }
    }
}
