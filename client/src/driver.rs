//! The one driver of the client core: moves datagrams, connection results, time and user
//! actions into the engine and its outputs onto the [`Net`]. It makes no protocol decision.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uclab_net::{Net, TcpConn, UdpSock};
use uclab_proto::dns::DnsMsg;

use crate::Time;
use crate::client::Client;
use crate::discovery::DiscoveryConfig;
use crate::event::ClientEvent;
use crate::io::{ConnId, HttpId, HttpReq, HttpResp, Input, Output};
use crate::resolver::{QueryToken, ResolverConfig};

/// Largest DNS message read over TCP (the 2-byte length caps it anyway).
const MAX_DNS_TCP: usize = 65535;

/// What a user (or a scenario timeline) asks the client to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserAction {
    /// Discover services (SPEC SD1–SD5).
    Discover {
        /// Domain, VoiceServicesDomain, exclusions.
        discovery: DiscoveryConfig,
    },
    /// Something done in the IM window: a message, a subscription, a status (SPEC IMP1).
    Im(crate::im::ImAction),
    /// Sign in to a plain XMPP server directly (SASL PLAIN, no SOAP, no discovery).
    ImDirect {
        /// The server's address.
        server: SocketAddr,
        /// The XMPP domain (the certificate must name it).
        domain: String,
        /// User (local part).
        user: String,
        /// Password.
        password: String,
    },
    /// Does something with calls (SPEC CC4, CC5).
    Call(crate::call::CallAction),
    /// Registers the softphone straight to a SIP registrar (no discovery, no UDS): how the
    /// client core meets a real registrar (`uclab probe-sip`).
    PhoneDirect {
        /// Registrar, then an optional backup (gets the keepalive REGISTER).
        servers: Vec<SocketAddr>,
        /// Digest user.
        user: String,
        /// Password.
        password: String,
        /// Directory number to register.
        line: String,
        /// Answer incoming calls at once.
        auto_answer: bool,
        /// SIP over UDP instead of TCP (the device's `transportLayerProtocol` 1).
        udp: bool,
    },
    /// The machine joined another network (SPEC SD8): new name servers from DHCP.
    NetworkChanged {
        /// The new name servers.
        dns: Vec<SocketAddr>,
    },
    /// Run the installer again with new bootstrap switches (SPEC CFG3).
    Install {
        /// The switches.
        bootstrap: Bootstrap,
    },
    /// Discover, then sign in (SPEC AU1).
    SignIn {
        /// Domain, VoiceServicesDomain, exclusions.
        discovery: DiscoveryConfig,
        /// User id.
        user: String,
        /// Password (never logged).
        password: String,
    },
}

pub use crate::client::Bootstrap;

/// A client's fixed settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Name in the transcript.
    pub name: String,
    /// Name servers (from DHCP).
    pub dns: Vec<SocketAddr>,
    /// Installer bootstrap switches.
    pub bootstrap: Bootstrap,
    /// A user signed in to IM stays signed in until this time (the scenario's horizon), so
    /// that others can reach them; then the client exits.
    pub stay_until: Time,
}

enum Msg {
    StreamOpened(ConnId),
    StreamFailed(ConnId, String),
    StreamData(ConnId, Vec<u8>),
    StreamTls(ConnId),
    Datagram(SocketAddr, Vec<u8>),
    Media(u16, SocketAddr, Vec<u8>),
    Connected(ConnId, std::io::Result<TcpConn>),
    TcpAnswer(QueryToken, Option<Vec<u8>>),
    Http(HttpId, Result<HttpResp, String>),
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
    let mut engine = Client::new(ResolverConfig::new(cfg.dns.clone()))
        .with_bootstrap(cfg.bootstrap.clone())
        .with_resource(&cfg.name);
    let mut tasks: BTreeMap<ConnId, JoinHandle<()>> = BTreeMap::new();
    let mut conns: BTreeMap<ConnId, TcpConn> = BTreeMap::new();
    let mut streams: BTreeMap<ConnId, mpsc::UnboundedSender<StreamCmd>> = BTreeMap::new();
    let mut media: BTreeMap<u16, (Rc<UdpSock>, JoinHandle<()>)> = BTreeMap::new();
    loop {
        // Drain the engine completely after every input (the sans-IO contract).
        while let Some(out) = engine.poll_output() {
            let now = net.now();
            match out {
                Output::Transmit { to, bytes } => {
                    log_dns(&*net, udp.local_addr(), to, "udp", &bytes);
                    if let Err(e) = udp.send_to(&bytes, to).await
                        && e.kind() == std::io::ErrorKind::ConnectionRefused
                    {
                        engine.handle_input(now, Input::Unreachable { from: to });
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
                Output::Http(req) => {
                    let (net, tx) = (net.clone(), tx.clone());
                    tokio::task::spawn_local(async move {
                        let r = http_exchange(&*net, &req).await;
                        let _ = tx.send(Msg::Http(req.id, r));
                    });
                }
                Output::StreamOpen { id, to, dscp } => {
                    let (ctx, crx) = mpsc::unbounded_channel();
                    streams.insert(id, ctx);
                    let (net, tx) = (net.clone(), tx.clone());
                    tokio::task::spawn_local(stream_actor(net, id, (to, dscp), crx, tx));
                }
                Output::DatagramOpen { id, to, dscp } => {
                    let (ctx, crx) = mpsc::unbounded_channel();
                    streams.insert(id, ctx);
                    let (net, tx) = (net.clone(), tx.clone());
                    tokio::task::spawn_local(datagram_actor(net, id, (to, dscp), crx, tx));
                }
                Output::StreamSend { id, bytes, summary } => {
                    if let Some(s) = streams.get(&id) {
                        let _ = s.send(StreamCmd::Send(bytes, summary));
                    }
                }
                Output::StreamTls { id, host } => {
                    if let Some(s) = streams.get(&id) {
                        let _ = s.send(StreamCmd::Tls(host));
                    }
                }
                Output::StreamClose { id } => {
                    if let Some(s) = streams.remove(&id) {
                        let _ = s.send(StreamCmd::Close);
                    }
                }
                Output::MediaOpen { port, dscp } => {
                    if media.contains_key(&port) {
                        continue;
                    }
                    // A port that cannot be bound (taken, in live mode) carries no media; the
                    // call goes on, as a real phone's signalling would.
                    if let Ok(mut sock) = net.bind_udp(port).await {
                        sock.set_dscp(dscp);
                        let sock = Rc::new(sock);
                        let (s, tx) = (sock.clone(), tx.clone());
                        let h = tokio::task::spawn_local(async move {
                            let mut buf = vec![0u8; 2048];
                            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                                if tx.send(Msg::Media(port, from, buf[..n].to_vec())).is_err() {
                                    break;
                                }
                            }
                        });
                        media.insert(port, (sock, h));
                    }
                }
                Output::MediaSend { port, to, bytes } => {
                    if let Some((s, _)) = media.get(&port) {
                        let _ = s.send_to(&bytes, to).await;
                    }
                }
                Output::MediaClose { port } => {
                    if let Some((_, h)) = media.remove(&port) {
                        h.abort();
                    }
                }
                Output::Event(e) => log_event(&*net, &cfg.name, &e),
            }
        }
        let staying =
            (engine.im_connected() || engine.phone_registered()) && net.now() < cfg.stay_until;
        let idle = engine.is_idle() && !staying;
        // The softphone's refreshes and pings go on for ever: past the horizon they end a run.
        if engine.only_upkeep() && engine.has_phone() && net.now() >= cfg.stay_until {
            break;
        }
        let stay = staying.then_some(cfg.stay_until);
        let deadline =
            [engine.poll_timeout(), actions.front().map(|a| a.0), stay].into_iter().flatten().min();
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
                    let seed = net.rng().next_u64();
                    match action {
                        UserAction::Discover { discovery } => engine.discover(now, &discovery, seed),
                        UserAction::SignIn { discovery, user, password } => {
                            engine.sign_in_user(now, &discovery, &user, &password, seed)
                        }
                        UserAction::Install { bootstrap } => engine.install(bootstrap),
                        UserAction::Im(a) => engine.im_action(&a),
                        UserAction::Call(a) => engine.call_action(now, &a),
                        UserAction::ImDirect { server, domain, user, password } => {
                            engine.im_direct(now, server, &domain, (&user, &password), seed)
                        }
                        UserAction::NetworkChanged { dns } => engine.network_changed(now, dns, seed),
                        UserAction::PhoneDirect {
                            servers,
                            user,
                            password,
                            line,
                            auto_answer,
                            udp,
                        } => {
                            let creds = (user.as_str(), password.as_str());
                            engine.phone_direct(now, &servers, creds, (&line, udp, auto_answer), seed)
                        }
                    }
                }
                engine.handle_timeout(now);
            }
        }
    }
    reader.abort();
    for (_, h) in media.into_values() {
        h.abort();
    }
    Ok(())
}

fn feed<N: Net>(
    net: &N,
    d: &mut Client,
    conns: &mut BTreeMap<ConnId, TcpConn>,
    tasks: &mut BTreeMap<ConnId, JoinHandle<()>>,
    m: Msg,
) {
    let now = net.now();
    match m {
        Msg::StreamOpened(id) => d.handle_input(now, Input::StreamOpened { id }),
        Msg::StreamFailed(id, reason) => d.handle_input(now, Input::StreamFailed { id, reason }),
        Msg::StreamData(id, bytes) => d.handle_input(now, Input::StreamData { id, bytes }),
        Msg::StreamTls(id) => d.handle_input(now, Input::StreamTls { id }),
        Msg::Http(id, result) => d.handle_input(now, Input::Http { id, result }),
        Msg::Datagram(from, bytes) => d.handle_input(now, Input::Datagram { from, bytes }),
        Msg::Media(port, from, bytes) => d.handle_input(now, Input::Media { port, from, bytes }),
        Msg::TcpAnswer(token, bytes) => d.handle_input(now, Input::TcpAnswer { token, bytes }),
        Msg::Connected(id, r) => {
            tasks.remove(&id);
            match r {
                Ok(c) => {
                    conns.insert(id, c);
                    d.handle_input(now, Input::Connected { id });
                }
                Err(e) => d.handle_input(now, Input::ConnectFailed { id, reason: io_reason(&e) }),
            }
        }
    }
}

/// Largest HTTP response body read.
const MAX_HTTP_BODY: usize = 1 << 20;

/// One HTTP request on its own connection (HTTPS checks the certificate against `req.host`).
async fn http_exchange<N: Net>(net: &N, req: &HttpReq) -> Result<HttpResp, String> {
    let tcp = net.connect(req.addr).await.map_err(|e| format!("connect: {e}"))?;
    let op = req
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("soapaction"))
        .and_then(|(_, v)| v.rsplit('/').next())
        .map(|op| format!(" ({op})"))
        .unwrap_or_default();
    let line = format!(
        "HTTP {} {}{}{op}",
        req.method,
        req.path,
        if req.basic.is_some() { " (Basic)" } else { "" }
    );
    net.transcript().message(net.now(), tcp.local_addr(), req.addr, "tcp", &line);
    if req.tls {
        let cfg = net.tls().client_config(&[]).map_err(|e| e.to_string())?;
        let s = net.tls().connect(cfg, &req.host, tcp).await.map_err(|e| format!("TLS: {e}"))?;
        http1(hyper_util::rt::TokioIo::new(s), req).await
    } else {
        http1(hyper_util::rt::TokioIo::new(tcp), req).await
    }
}

async fn http1<I>(io: I, req: &HttpReq) -> Result<HttpResp, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    use http_body_util::BodyExt;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    let host = if req.addr.port() == 443 {
        req.host.clone()
    } else {
        format!("{}:{}", req.host, req.addr.port())
    };
    let mut b = hyper::Request::builder()
        .method(req.method)
        .uri(req.path.as_str())
        .header("host", host)
        .header("user-agent", "uclab-client")
        .header("accept", "application/xml");
    if let Some((u, p)) = &req.basic {
        let token = uclab_proto::base64::encode(format!("{u}:{p}").as_bytes());
        b = b.header("authorization", format!("Basic {token}"));
    }
    for (k, v) in &req.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let body = http_body_util::Full::new(bytes::Bytes::from(req.body.clone()));
    let request = b.body(body).map_err(|e| e.to_string())?;
    let resp = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_HTTP_BODY)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok(HttpResp { status, body })
}

/// What the engine asks of a stream.
enum StreamCmd {
    Send(Vec<u8>, String),
    Tls(String),
    Close,
}

/// Owns one datagram "stream" (SIP over UDP): its own socket, datagrams to and from `to`.
async fn datagram_actor<N: Net>(
    net: Rc<N>,
    id: ConnId,
    (to, dscp): (SocketAddr, u8),
    mut cmds: mpsc::UnboundedReceiver<StreamCmd>,
    tx: mpsc::UnboundedSender<Msg>,
) {
    let mut udp = match net.bind_udp(0).await {
        Ok(u) => u,
        Err(e) => {
            let _ = tx.send(Msg::StreamFailed(id, io_reason(&e)));
            return;
        }
    };
    udp.set_dscp(dscp);
    let local = udp.local_addr();
    let _ = tx.send(Msg::StreamOpened(id));
    let mut buf = vec![0u8; 65_535];
    loop {
        tokio::select! {
            biased;
            c = cmds.recv() => match c {
                None | Some(StreamCmd::Close) => return,
                Some(StreamCmd::Send(bytes, summary)) => {
                    net.transcript().message(net.now(), local, to, "udp", &summary);
                    if let Err(e) = udp.send_to(&bytes, to).await {
                        let _ = tx.send(Msg::StreamFailed(id, io_reason(&e)));
                        return;
                    }
                }
                Some(StreamCmd::Tls(_)) => {
                    let _ = tx.send(Msg::StreamFailed(id, "TLS over UDP".into()));
                    return;
                }
            },
            r = udp.recv_from(&mut buf) => match r {
                // Only the peer's datagrams belong to this flow.
                Ok((n, from)) if from == to => {
                    let _ = tx.send(Msg::StreamData(id, buf[..n].to_vec()));
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Msg::StreamFailed(id, io_reason(&e)));
                    return;
                }
            },
        }
    }
}

/// Owns one long-lived stream (XMPP): connects, writes what the engine sends, upgrades to TLS
/// when asked, and reports every read. Reads are cancel-safe, so one task can wait on both.
async fn stream_actor<N: Net>(
    net: Rc<N>,
    id: ConnId,
    (to, dscp): (SocketAddr, u8),
    mut cmds: mpsc::UnboundedReceiver<StreamCmd>,
    tx: mpsc::UnboundedSender<Msg>,
) {
    let mut tcp = match net.connect(to).await {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Msg::StreamFailed(id, io_reason(&e)));
            return;
        }
    };
    tcp.set_dscp(dscp);
    let (local, peer) = (tcp.local_addr(), tcp.peer_addr());
    let _ = tx.send(Msg::StreamOpened(id));
    let mut io: Box<dyn uclab_net::AsyncIo> = Box::new(tcp);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Biased: tokio's default picks among ready branches at random, which a replay must
        // not depend on. Commands first: what the engine asked for happens before new reads.
        tokio::select! {
            biased;
            c = cmds.recv() => match c {
                None | Some(StreamCmd::Close) => {
                    let _ = io.shutdown().await;
                    return;
                }
                Some(StreamCmd::Send(bytes, summary)) => {
                    net.transcript().message(net.now(), local, peer, "tcp", &summary);
                    if let Err(e) = io.write_all(&bytes).await {
                        let _ = tx.send(Msg::StreamFailed(id, io_reason(&e)));
                        return;
                    }
                }
                Some(StreamCmd::Tls(host)) => {
                    let cfg = match net.tls().client_config(&[]) {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = tx.send(Msg::StreamFailed(id, format!("TLS: {e}")));
                            return;
                        }
                    };
                    match net.tls().connect(cfg, &host, io).await {
                        Ok(t) => {
                            io = Box::new(t);
                            let _ = tx.send(Msg::StreamTls(id));
                        }
                        Err(e) => {
                            let _ = tx.send(Msg::StreamFailed(id, format!("TLS: {e}")));
                            return;
                        }
                    }
                }
            },
            r = io.read(&mut buf) => match r {
                Ok(0) => {
                    let _ = tx.send(Msg::StreamFailed(id, "closed by the server".into()));
                    return;
                }
                Ok(n) => {
                    let _ = tx.send(Msg::StreamData(id, buf[..n].to_vec()));
                }
                Err(e) => {
                    let _ = tx.send(Msg::StreamFailed(id, io_reason(&e)));
                    return;
                }
            },
        }
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "refused".to_owned(),
        std::io::ErrorKind::ConnectionReset => "reset".to_owned(),
        // Only the live egress check refuses a connect this way (issue 13).
        std::io::ErrorKind::PermissionDenied => "outside the lab".to_owned(),
        k => format!("{k:?}").to_lowercase(),
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
