//! Event-driven simulated time (issue 19), on turmoil directly: idle stretches are jumped, a
//! registered timer fires on its millisecond however far the clock jumps, and a timer the
//! simulation cannot see fails the run instead of firing late. (That whole scenarios give the
//! same bytes as stepping every tick is checked by `tests/scenarios.rs`.)

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use turmoil::net::UdpSocket;
use uclab_net::time::{Instant, sleep, timeout};

const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1));
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 2));

fn sim<'a>() -> turmoil::Sim<'a> {
    builder().simulation_duration(Duration::from_secs(7200)).build()
}

/// Seeded: turmoil's random latency (0 to 100 ms per message) is drawn from the seed.
fn builder() -> turmoil::Builder {
    let mut b = turmoil::Builder::new();
    b.rng_seed(19).tick_duration(Duration::from_millis(1));
    b
}

/// Steps `sim` to the end, jumping wherever it can; returns how many steps it took.
fn run_jumping(sim: &mut turmoil::Sim<'_>) -> Result<u64, String> {
    let mut steps = 0;
    loop {
        if sim.skip_idle(u64::MAX) > 0 {
            continue;
        }
        steps += 1;
        if sim.step().map_err(|e| e.to_string())? {
            return Ok(steps);
        }
    }
}

/// A server that answers every datagram after `delay`, on a registered timer.
fn echo_after(sim: &mut turmoil::Sim<'_>, delay: Duration) {
    sim.host(SERVER, move || async move {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 9)).await?;
        let mut buf = [0; 64];
        loop {
            let (n, from) = s.recv_from(&mut buf).await?;
            sleep(delay).await;
            s.send_to(&buf[..n], from).await?;
        }
    });
}

#[test]
fn an_hour_of_quiet_takes_a_handful_of_steps_and_timers_fire_on_their_millisecond() {
    let mut sim = sim();
    echo_after(&mut sim, Duration::from_millis(1500));
    let seen = Rc::new(Cell::new(Duration::ZERO));
    let out = seen.clone();
    sim.client(CLIENT, async move {
        let t0 = Instant::now();
        sleep(Duration::from_secs(3600)).await;
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 1000)).await?;
        s.send_to(b"ping", SocketAddr::from((SERVER, 9))).await?;
        let mut buf = [0; 64];
        let (n, _) = timeout(Duration::from_secs(10), s.recv_from(&mut buf)).await??;
        assert_eq!(&buf[..n], b"ping");
        out.set(Instant::now() - t0);
        Ok(())
    });
    let steps = run_jumping(&mut sim).expect("the run ends");
    // An hour and 1.5 s of waiting, two messages across (at most 100 ms each way), each step
    // where something happens taken.
    assert!(steps < 1_000, "{steps} steps for an hour of quiet");
    let took = seen.get();
    assert!(took >= Duration::from_millis(3_601_500), "{took:?}");
    assert!(took <= Duration::from_millis(3_601_800), "{took:?}");
    assert_eq!(took.subsec_nanos() % 1_000_000, 0, "{took:?} is not on a millisecond");
}

#[test]
fn the_same_run_stepped_tick_by_tick_sees_the_same_times() {
    let times = |event_driven: bool| {
        let mut sim = builder()
            .simulation_duration(Duration::from_secs(600))
            .event_driven(event_driven)
            .build();
        echo_after(&mut sim, Duration::from_millis(250));
        let log = Rc::new(std::cell::RefCell::new(Vec::new()));
        let out = log.clone();
        sim.client(CLIENT, async move {
            let t0 = Instant::now();
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 1000)).await?;
            let mut buf = [0; 64];
            for i in 0..20u64 {
                sleep(Duration::from_millis(7 * i * i + 3)).await;
                s.send_to(&i.to_be_bytes(), SocketAddr::from((SERVER, 9))).await?;
                let got = timeout(Duration::from_millis(300), s.recv_from(&mut buf)).await;
                out.borrow_mut().push((i, got.is_ok(), Instant::now() - t0));
            }
            Ok(())
        });
        run_jumping(&mut sim).expect("the run ends");
        log.take()
    };
    let stepped = times(false);
    assert_eq!(stepped.len(), 20);
    assert_eq!(times(true), stepped);
}

#[test]
fn a_timer_the_simulation_cannot_see_fails_the_run() {
    let mut sim = sim();
    sim.host(SERVER, || async {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 9)).await?;
        // Deliberately tokio's own timer, not registered with the simulation.
        #[allow(clippy::disallowed_methods)]
        tokio::time::sleep(Duration::from_secs(5)).await;
        s.send_to(b"late", SocketAddr::from((CLIENT, 1000))).await?;
        Ok(())
    });
    sim.client(CLIENT, async {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 1000)).await?;
        let mut buf = [0; 64];
        let _ = timeout(Duration::from_secs(30), s.recv_from(&mut buf)).await;
        Ok(())
    });
    let err = run_jumping(&mut sim).expect_err("the unseen timer is reported");
    assert!(err.contains("cannot see") && err.contains("turmoil::Deadline"), "{err}");
}
