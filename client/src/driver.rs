//! The one driver of the client core: moves datagrams, connection results, time and user
//! actions into the engine and its outputs onto the [`Net`]. It makes no protocol decision.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uclab_net::{Net, TcpConn};
use uclab_proto::dns::DnsMsg;

use crate::Time;
use crate::discovery::{ConnId, Discovery, Input, Output};
use crate::event::ClientEvent;
use crate::resolver::{QueryToken, ResolverConfig};

/// Largest DNS message read over TCP (the 2-byte length caps it anyway).
const MAX_DNS_TCP: usize = 65535;

/// What a user (or a scenario timeline) asks the client to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserAction {
    /// Discover the services of a domain (SPEC SD5).
    Discover {
        /// Services domain.
        domain: String,
    },
}

/// A client's fixed settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Name in the transcript.
    pub name: String,
    /// Name servers (from DHCP).
    pub dns: Vec<SocketAddr>,
}

enum Msg {
    Datagram(SocketAddr, Vec<u8>),
    Connected(ConnId, std::io::Result<TcpConn>),
    TcpAnswer(QueryToken, Option<Vec<u8>>),
}

/// Runs a client until its actions are done and its engine is idle.
pub async fn run<N: Net + Clone + 'static>(
    net: N,
    cfg: ClientConfig,
    mut actions: Vec<(Time, UserAction)>,
) -> std::io::Result<()> {
    actions.sort_by_key(|a| a.0);
    let mut actions = std::collections::VecDeque::from(actions);
    let net = Rc::new(net);
    let udp = Rc::new(net.bind_udp(0).await?);
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let reader = {
        let (udp, tx) = (udp.clone(), tx.clone());
        tokio::task::spawn_local(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                if tx.send(Msg::Datagram(from, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        })
    };
    let mut engine: Option<Discovery> = None;
    let mut tasks: BTreeMap<ConnId, JoinHandle<()>> = BTreeMap::new();
    let mut conns: BTreeMap<ConnId, TcpConn> = BTreeMap::new();
    loop {
        // Drain the engine completely after every input (the sans-IO contract).
        while let Some(out) = engine.as_mut().and_then(Discovery::poll_output) {
            let now = net.now();
            match out {
                Output::Transmit { to, bytes } => {
                    log_dns(&*net, udp.local_addr(), to, "udp", &bytes);
                    if let Err(e) = udp.send_to(&bytes, to).await
                        && e.kind() == std::io::ErrorKind::ConnectionRefused
                        && let Some(d) = engine.as_mut()
                    {
                        d.handle_input(now, Input::Unreachable { from: to });
                    }
                }
                Output::TcpExchange { token, to, bytes } => {
                    let (net, tx) = (net.clone(), tx.clone());
                    tokio::task::spawn_local(async move {
                        let answer = dns_over_tcp(&*net, to, &bytes).await.ok();
                        let _ = tx.send(Msg::TcpAnswer(token, answer));
                    });
                }
                Output::Connect { id, to } => {
                    let (net, tx) = (net.clone(), tx.clone());
                    let h = tokio::task::spawn_local(async move {
                        let r = net.connect(to).await;
                        let _ = tx.send(Msg::Connected(id, r));
                    });
                    tasks.insert(id, h);
                }
                Output::Close { id } => {
                    if let Some(h) = tasks.remove(&id) {
                        h.abort();
                    }
                    if let Some(mut c) = conns.remove(&id) {
                        let _ = c.shutdown().await;
                    }
                }
                Output::Event(e) => log_event(&*net, &cfg.name, &e),
            }
        }
        let idle = engine.as_ref().is_none_or(Discovery::is_done);
        let deadline =
            [engine.as_ref().and_then(Discovery::poll_timeout), actions.front().map(|a| a.0)]
                .into_iter()
                .flatten()
                .min();
        let Some(deadline) = deadline else {
            if idle {
                break;
            }
            // Waiting on the network only.
            match rx.recv().await {
                Some(m) => feed(&*net, &mut engine, &mut conns, &mut tasks, m),
                None => break,
            }
            continue;
        };
        let sleep = deadline.saturating_sub(net.now());
        tokio::select! {
            biased;
            Some(m) = rx.recv() => feed(&*net, &mut engine, &mut conns, &mut tasks, m),
            () = tokio::time::sleep(sleep) => {
                let now = net.now();
                while actions.front().is_some_and(|a| a.0 <= now) {
                    let (_, action) = actions.pop_front().expect("checked");
                    match action {
                        UserAction::Discover { domain } => {
                            let seed = net.rng().next_u64();
                            let rc = ResolverConfig::new(cfg.dns.clone());
                            engine = Some(Discovery::start(now, &domain, rc, seed));
                        }
                    }
                }
                if let Some(d) = engine.as_mut() {
                    d.handle_timeout(now);
                }
            }
        }
    }
    reader.abort();
    Ok(())
}

fn feed<N: Net>(
    net: &N,
    engine: &mut Option<Discovery>,
    conns: &mut BTreeMap<ConnId, TcpConn>,
    tasks: &mut BTreeMap<ConnId, JoinHandle<()>>,
    m: Msg,
) {
    let now = net.now();
    let Some(d) = engine.as_mut() else { return };
    match m {
        Msg::Datagram(from, bytes) => d.handle_input(now, Input::Datagram { from, bytes }),
        Msg::TcpAnswer(token, bytes) => d.handle_input(now, Input::TcpAnswer { token, bytes }),
        Msg::Connected(id, r) => {
            tasks.remove(&id);
            match r {
                Ok(c) => {
                    conns.insert(id, c);
                    d.handle_input(now, Input::Connected { id });
                }
                Err(e) => {
                    let reason = match e.kind() {
                        std::io::ErrorKind::ConnectionRefused => "refused".to_owned(),
                        std::io::ErrorKind::ConnectionReset => "reset".to_owned(),
                        k => format!("{k:?}").to_lowercase(),
                    };
                    d.handle_input(now, Input::ConnectFailed { id, reason });
                }
            }
        }
    }
}

/// One DNS exchange over TCP with RFC 1035 §4.2.2 length framing.
async fn dns_over_tcp<N: Net>(net: &N, to: SocketAddr, q: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut c = net.connect(to).await?;
    log_dns(net, c.local_addr(), to, "tcp", q);
    let len = u16::try_from(q.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(q);
    c.write_all(&framed).await?;
    let n = usize::from(c.read_u16().await?);
    let mut buf = vec![0u8; n.min(MAX_DNS_TCP)];
    c.read_exact(&mut buf).await?;
    let _ = c.shutdown().await;
    Ok(buf)
}

fn log_dns<N: Net>(net: &N, from: SocketAddr, to: SocketAddr, transport: &str, bytes: &[u8]) {
    let text = match DnsMsg::parse(bytes) {
        Ok(m) => format!("DNS {}", m.summary()),
        Err(e) => format!("DNS ({e})"),
    };
    net.transcript().message(net.now(), from, to, transport, &text);
}

fn log_event<N: Net>(net: &N, who: &str, e: &ClientEvent) {
    let fields = e.fields().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    net.transcript().event(net.now(), who, e.kind(), fields, &e.to_string());
}
