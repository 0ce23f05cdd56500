use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;

use rand::rngs::SmallRng;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio::task::LocalSet;
use tokio::time::{sleep, Duration, Instant};

use super::Result;
use crate::idle::{self, Flag, SharedDeadlines};
use std::task::{Context, Poll, Waker};

// To support re-creation, we need to store a factory of the future that
// represents the software. This is somewhat annoying in that it requires
// boxxing to avoid generics.
type Software<'a> = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result>>> + 'a>;

/// Runtime kinds.
pub enum Kind<'a> {
    /// A runtime for executing test code.
    Client,

    /// A runtime that is running simulated host software.
    Host { software: Software<'a> },

    /// A runtime without any software. The network topology uses this for
    /// time tracking and message delivery.
    NoSoftware,
}

/// Runtime configuration.
#[derive(Clone, Default)]
pub struct Config {
    /// Whether io is enabled on the runtime.
    pub enable_io: bool,

    /// Rng used to seed the tokio runtime.
    ///
    /// Only used if the `tokio_unstable` cfg flag is set.
    #[cfg_attr(not(tokio_unstable), expect(dead_code))]
    pub rng: Option<SmallRng>,
}

/// Per host simulated runtime.
///
/// The tokio runtime is paused (see [`Builder::start_paused`]), which gives us
/// control over when and how to advance time. In particular, see [`Rt::tick`],
/// which lets the runtime do a bit more work.
pub struct Rt<'a> {
    pub kind: Kind<'a>,

    /// Handle to the Tokio runtime driving this simulated host. Each runtime
    /// may have a different sense of "now" which simulates clock skew.
    tokio: Runtime,

    /// Local task set used for running !Send tasks.
    local: LocalSet,

    /// A user readable name to identify the node.
    pub nodename: Arc<str>,

    /// Optional handle to a host's software. When software finishes, the handle is
    /// consumed to check for error, which is propagated up to fail the simulation.
    handle: Option<JoinHandle<Result>>,

    /// Runtime configuration.
    config: Config,

    /// uclab: event-driven time (see [`crate::idle`]).
    idle: Idle,
}

/// uclab: what [`crate::Sim`] needs to leave a host alone while it has
/// nothing to do, and to bring it up to date before it runs again.
struct Idle {
    /// Set when a task of the host's `LocalSet` may be runnable.
    flag: Arc<Flag>,
    /// The same, as the waker the `LocalSet` holds.
    waker: Waker,
    /// The timers the host's software waits on.
    deadlines: SharedDeadlines,
    /// Ticks the host was left alone for, not yet applied to its runtime.
    lag: u64,
    /// The earliest of `deadlines` when the software last ran (only the
    /// host's own software registers or drops them), in ticks after the
    /// runtime's clock then, rounded up; with the tick it was counted in.
    /// `idle_ticks`, asked for every host on every step, compares integers.
    due: Option<(Duration, u64)>,
    /// Time the host was left alone for, not yet added to its host timer.
    host_time: Duration,
}

impl Idle {
    fn new() -> Idle {
        let flag = Arc::new(Flag::default());
        // A new runtime has its software to start.
        flag.set(true);
        Idle {
            waker: Waker::from(flag.clone()),
            flag,
            deadlines: SharedDeadlines::default(),
            lag: 0,
            due: None,
            host_time: Duration::ZERO,
        }
    }
}

/// `n` ticks.
pub(crate) fn span(tick: Duration, n: u64) -> Duration {
    tick.checked_mul(n.try_into().unwrap_or(u32::MAX)).unwrap_or(Duration::MAX)
}

impl<'a> Rt<'a> {
    pub(crate) fn client<F>(nodename: Arc<str>, client: F, mut config: Config) -> Self
    where
        F: Future<Output = Result> + 'static,
    {
        let (tokio, local) = init(&mut config);

        let handle = with(&tokio, &local, || tokio::task::spawn_local(client));

        Self {
            kind: Kind::Client,
            idle: Idle::new(),
            tokio,
            local,
            nodename,
            handle: Some(handle),
            config,
        }
    }

    pub(crate) fn host<F, Fut>(nodename: Arc<str>, software: F, mut config: Config) -> Self
    where
        F: Fn() -> Fut + 'a,
        Fut: Future<Output = Result> + 'static,
    {
        let (tokio, local) = init(&mut config);

        let software: Software = Box::new(move || Box::pin(software()));
        let handle = with(&tokio, &local, || tokio::task::spawn_local(software()));

        Self {
            kind: Kind::Host { software },
            idle: Idle::new(),
            tokio,
            local,
            nodename,
            handle: Some(handle),
            config,
        }
    }

    pub(crate) fn no_software() -> Self {
        let mut config = Config::default();
        let (tokio, local) = init(&mut config);

        Self {
            kind: Kind::NoSoftware,
            idle: Idle::new(),
            tokio,
            local,
            nodename: String::new().into(),
            handle: None,
            config,
        }
    }

    pub(crate) fn is_client(&self) -> bool {
        matches!(self.kind, Kind::Client)
    }

    fn is_host(&self) -> bool {
        matches!(self.kind, Kind::Host { .. })
    }

    pub(crate) fn is_software_running(&self) -> bool {
        self.handle.is_some()
    }

    pub(crate) fn now(&self) -> Instant {
        let _guard = self.tokio.enter();
        Instant::now()
    }

    // This method is called by [`Sim::run`], which iterates through all the
    // runtimes and ticks each one. The magic of this method is described in the
    // documentation for [`LocalSet::run_until`], but it may not be entirely
    // obvious how things fit together.
    //
    // A [`LocalSet`] tracks the tasks to run, which may in turn spawn more
    // tasks. `run_until` drives a top level task to completion, but not its
    // children. If you look below, you may be confused. The task we run here
    // just sleeps and has no children! However, it's the _same `LocalSet`_ that
    // is used to run software on the host.
    //
    // In this way, every time `tick` is called, the following unfolds:
    //
    // 1. Time advances on the runtime
    // 2. We schedule a new task that simply sleeps
    // 3. Other tasks on the `LocalSet` get a chance to run
    // 4. The sleep finishes
    // 5. The runtime pauses
    //
    // Returns whether the software has finished successfully or the error
    // that caused failure. Subsequent calls do not return the error as it is
    // expected to fail the simulation.
    pub(crate) fn tick(&mut self, duration: Duration) -> Result<bool> {
        // uclab: the `LocalSet` is polled with the flag's waker, so that a
        // wake of any of its tasks, now or between ticks, is seen; the
        // tick's own sleep keeps the runtime's waker, as upstream.
        let Idle {
            flag,
            waker,
            deadlines,
            ..
        } = &self.idle;
        let local = &self.local;
        idle::enter(deadlines, || {
            self.tokio.block_on(Flagged {
                flag,
                waker,
                inner: std::pin::pin!(local.run_until(async {
                    let tick = sleep(duration);
                    tokio::pin!(tick);
                    std::future::poll_fn(|_| match flag.forwarded() {
                        Some(w) => tick.as_mut().poll(&mut Context::from_waker(&w)),
                        None => Poll::Pending,
                    })
                    .await
                })),
            })
        });
        self.note_next(duration);

        // pull for software completion
        match &self.handle {
            Some(handle) if handle.is_finished() => {
                // Consume handle to extract task result
                if let Some(h) = self.handle.take() {
                    match self.tokio.block_on(h) {
                        // If the host was crashed the JoinError is cancelled, which
                        // needs to be handled to not fail the simulation.
                        Err(je) if je.is_cancelled() => {}
                        res => res??,
                    }
                };
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Ok(true),
        }
    }

    /// uclab: whether the host can be left alone for the next `n` ticks of
    /// `tick` (see [`crate::idle`]): 0 when it must run in the next one.
    pub(crate) fn idle_ticks(&self, tick: Duration, n: u64) -> u64 {
        if self.idle.flag.woken() || !matches!(self.kind, Kind::Host { .. } | Kind::Client) {
            return 0;
        }
        let n = match self.idle.due {
            None => n,
            // The deadline is reached in tick `due` after the last run and
            // fires at the end of it; `lag` ticks have passed since. Counted
            // in another tick (the simulation has one), the host just runs.
            Some((t, due)) if t == tick && due > self.idle.lag => n.min(due - self.idle.lag - 1),
            Some(_) => return 0,
        };
        if n == 0 || self.tokio.metrics().num_alive_tasks() != 0 {
            return 0;
        }
        n
    }

    /// uclab: after the runtime ran, its earliest deadline in ticks of `tick`.
    fn note_next(&mut self, tick: Duration) {
        let clock = self.now();
        self.idle.due = idle::first(&self.idle.deadlines).map(|at| {
            let ahead = at.saturating_duration_since(clock).as_nanos();
            let ticks = ahead.div_ceil(tick.as_nanos().max(1));
            (tick, ticks.try_into().unwrap_or(u64::MAX))
        });
    }

    /// uclab: how many ticks the host was left alone for, not yet applied.
    pub(crate) fn lag(&self) -> u64 {
        self.idle.lag
    }

    /// uclab: leaves the host alone for `n` ticks of `tick`.
    pub(crate) fn skip(&mut self, n: u64, tick: Duration) {
        self.idle.lag += n;
        self.idle.host_time += span(tick, n);
    }

    /// uclab: time the host was left alone for since this was last asked,
    /// for its host timer.
    pub(crate) fn take_host_time(&mut self) -> Duration {
        std::mem::take(&mut self.idle.host_time)
    }

    /// uclab: brings a host that was left alone up to date, as if it had
    /// been stepped through each of those ticks with nothing to do: its
    /// clock moves `lag` ticks, and timers due by then (none the host
    /// registered) fire.
    ///
    /// Idle ticks also advance the `LocalSet`'s scheduler tick, which is not
    /// replayed: it only chooses between the local and the remote run queue,
    /// and on the one thread of a simulation every wake goes to the local
    /// queue (tokio 1.54 `task/local.rs`, `Shared::schedule`).
    pub(crate) fn catch_up(&mut self, tick: Duration) -> Result<()> {
        let n = std::mem::take(&mut self.idle.lag);
        if n == 0 {
            return Ok(());
        }
        let Idle { flag, deadlines, .. } = &self.idle;
        let woken = flag.take();
        idle::enter(deadlines, || {
            self.tokio.block_on(tokio::time::advance(span(tick, n)));
        });
        let flag = flag.clone();
        self.note_next(tick);
        if flag.woken() {
            return Err(format!(
                "host {} had a timer the simulation cannot see fire while it was \
                 left idle ({n} ticks): register every timer with turmoil::Deadline",
                self.nodename
            )
            .into());
        }
        flag.set(woken);
        Ok(())
    }

    pub(crate) fn crash(&mut self) {
        if !self.is_host() {
            panic!("can only crash host's software");
        }

        if self.handle.take().is_some() {
            self.cancel_tasks();
        };
    }

    pub(crate) fn bounce(&mut self) {
        if !self.is_host() {
            panic!("can only bounce host's software");
        }

        self.cancel_tasks();

        if let Kind::Host { software } = &self.kind {
            let handle = with(&self.tokio, &self.local, || {
                tokio::task::spawn_local(software())
            });
            self.handle.replace(handle);
        };
    }

    /// Cancel all tasks within the [`Rt`] by dropping the current tokio
    /// [`Runtime`].
    ///
    /// Dropping the runtime blocks the calling thread until all futures have
    /// completed, which is desired here to ensure host software completes and
    /// all resources are dropped.
    ///
    /// Both the [`Runtime`] and [`LocalSet`] are replaced with new instances.
    fn cancel_tasks(&mut self) {
        let (tokio, local) = init(&mut self.config);

        _ = mem::replace(&mut self.tokio, tokio);
        drop(mem::replace(&mut self.local, local));
        // uclab: a new runtime, with the software (if any) to start.
        self.idle = Idle::new();
    }
}

/// uclab: polls the `LocalSet` (`inner`) with the flag's waker and keeps
/// the flag set only while a woken task may still wait in its queues.
struct Flagged<'f, F> {
    flag: &'f Arc<Flag>,
    waker: &'f Waker,
    inner: Pin<&'f mut F>,
}

impl<F: Future> Future for Flagged<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.flag.forward_to(cx.waker());
        // Woken before this poll: handled by it, unless it returns at once.
        let before = self.flag.take();
        let waker = self.waker;
        let out = self.inner.as_mut().poll(&mut Context::from_waker(waker));
        if out.is_ready() && before {
            self.flag.set(true);
        }
        out
    }
}

fn init(config: &mut Config) -> (Runtime, LocalSet) {
    let mut tokio_builder = tokio::runtime::Builder::new_current_thread();

    #[cfg(tokio_unstable)]
    tokio_builder.unhandled_panic(tokio::runtime::UnhandledPanic::ShutdownRuntime);

    if config.enable_io {
        tokio_builder.enable_io();
    }

    #[cfg(tokio_unstable)]
    if let Some(rng) = &mut config.rng {
        let bytes: [u8; 32] = rand::Rng::random(rng);
        let seed = tokio::runtime::RngSeed::from_bytes(&bytes);
        tokio_builder.rng_seed(seed);
    }

    let tokio = tokio_builder
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();

    tokio.block_on(async {
        // Sleep to "round" `Instant::now()` to the closest `ms`
        tokio::time::sleep(Duration::from_millis(1)).await;
    });

    (tokio, new_local())
}

fn new_local() -> LocalSet {
    #[cfg(not(tokio_unstable))]
    let local = LocalSet::new();

    #[cfg(tokio_unstable)]
    let mut local = LocalSet::new();

    #[cfg(tokio_unstable)]
    local.unhandled_panic(tokio::runtime::UnhandledPanic::ShutdownRuntime);

    local
}

fn with<R>(tokio: &Runtime, local: &LocalSet, f: impl FnOnce() -> R) -> R {
    tokio.block_on(async { local.run_until(async { f() }).await })
}
