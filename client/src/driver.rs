//! The one driver of the client core: moves datagrams, connection results, time and user
//! actions into the engine and its outputs onto the [`Net`]. It makes no protocol decision.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uclab_net::http1::{Http1Error, Pool, RequestError, request};
use uclab_net::{Net, TcpConn, UdpSock};

use crate::Time;
pub use crate::action::UserAction;
pub use crate::client::Bootstrap;
use crate::client::Client;
use crate::io::{ConnId, HttpId, HttpReq, HttpResp, Input, NetError, Output};
use crate::resolver::{QueryToken, ResolverConfig};

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

/// Commands waiting for one stream's task at most (what the engine wrote and the peer has
/// not read yet). Far above what any protocol exchange of the client queues.
const STREAM_BACKLOG: usize = 1_024;

/// What the socket tasks report to the loop.
enum Msg {
    StreamOpened(ConnId),
    StreamFailed(ConnId, NetError),
    StreamData(ConnId, Vec<u8>),
    StreamTls(ConnId),
    Datagram(SocketAddr, Vec<u8>),
    Media(u16, SocketAddr, Vec<u8>),
    // Boxed: the channel's blocks hold 32 messages each, made with it, and these two are the
    // large ones (issue 19).
    Connected(ConnId, Box<std::io::Result<TcpConn>>),
    TcpAnswer(QueryToken, Option<Vec<u8>>),
    Http(HttpId, Box<Result<HttpResp, NetError>>),
}

/// Runs a client until its actions are done and it is finished.
pub async fn run<N: Net + Clone + 'static>(
    net: N,
    cfg: ClientConfig,
    mut actions: Vec<(Time, UserAction)>,
) -> std::io::Result<()> {
    actions.sort_by_key(|a| a.0);
    let mut actions = std::collections::VecDeque::from(actions);
    let net = Rc::new(net);
    let mut io = Io::start(net.clone(), &cfg.name).await?;
    let mut engine = Client::new(ResolverConfig::new(cfg.dns.clone()))
        .with_bootstrap(cfg.bootstrap.clone())
        .with_resource(&cfg.name)
        .with_horizon(cfg.stay_until);
    // Due deadlines handled in a row without waiting: a bound, so that an engine whose
    // deadline never clears cannot keep this task from yielding.
    let mut due_in_a_row = 0u32;
    loop {
        // Drain the engine completely after every input (the sans-IO contract).
        while let Some(out) = engine.poll_output() {
            io.execute(&mut engine, out).await;
        }
        let now = net.now();
        if actions.is_empty() && engine.is_finished(now) {
            break;
        }
        let deadline =
            [engine.poll_timeout(), actions.front().map(|a| a.0)].into_iter().flatten().min();
        // A due deadline is handled before more input is read: a busy network must not starve
        // timers and user actions.
        match deadline {
            Some(d) if d <= now => {
                due_in_a_row += 1;
                if due_in_a_row.is_multiple_of(1_000) {
                    tokio::task::yield_now().await;
                }
            }
            Some(d) => tokio::select! {
                biased;
                Some(m) = io.rx.recv() => {
                    io.feed(&mut engine, m);
                    continue;
                }
                () = uclab_net::time::sleep(d - now) => {}
            },
            None => match io.rx.recv().await {
                Some(m) => {
                    io.feed(&mut engine, m);
                    continue;
                }
                None => break,
            },
        }
        if deadline.is_some_and(|d| d > now) {
            due_in_a_row = 0;
        }
        let now = net.now();
        while actions.front().is_some_and(|a| a.0 <= now) {
            let (_, action) = actions.pop_front().expect("checked");
            if matches!(action, UserAction::NetworkChanged { .. }) {
                // Kept HTTP connections belong to the old network.
                io.http.clear();
            }
            engine.handle_action(now, action, net.rng().next_u64());
        }
        engine.handle_timeout(now);
    }
    io.stop();
    Ok(())
}

/// The client's sockets and the tasks that move their bytes.
struct Io<N: Net> {
    net: Rc<N>,
    /// Name in the transcript.
    name: String,
    udp: Rc<UdpSock>,
    reader: JoinHandle<()>,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    tasks: BTreeMap<ConnId, JoinHandle<()>>,
    conns: BTreeMap<ConnId, TcpConn>,
    streams: BTreeMap<ConnId, mpsc::Sender<StreamCmd>>,
    media: BTreeMap<u16, (Rc<UdpSock>, JoinHandle<()>)>,
    /// HTTP connections kept for the next request (keep-alive).
    http: Rc<Pool>,
}

impl<N: Net + 'static> Io<N> {
    /// Binds the resolver socket and starts reading it.
    async fn start(net: Rc<N>, name: &str) -> std::io::Result<Self> {
        let udp = Rc::new(net.bind_udp(0).await?);
        let (tx, rx) = mpsc::unbounded_channel::<Msg>();
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
        Ok(Self {
            net,
            name: name.to_owned(),
            udp,
            reader,
            tx,
            rx,
            tasks: BTreeMap::new(),
            conns: BTreeMap::new(),
            streams: BTreeMap::new(),
            media: BTreeMap::new(),
            http: Rc::new(Pool::new(HTTP_KEEP_PER_SERVER, HTTP_KEEP_SERVERS, HTTP_KEEP_IDLE)),
        })
    }

    fn stop(self) {
        self.reader.abort();
        for (_, h) in self.media.into_values() {
            h.abort();
        }
    }

    /// Does what the engine asked.
    async fn execute(&mut self, engine: &mut Client, out: Output) {
        let net = &self.net;
        match out {
            Output::Transmit { to, bytes, summary } => {
                net.transcript().message(net.now(), self.udp.local_addr(), to, "udp", &summary);
                if let Err(e) = self.udp.send_to(&bytes, to).await
                    && e.kind() == std::io::ErrorKind::ConnectionRefused
                {
                    engine.handle_input(net.now(), Input::Unreachable { from: to });
                }
            }
            Output::TcpExchange { token, to, framed, summary } => {
                let (net, tx) = (net.clone(), self.tx.clone());
                tokio::task::spawn_local(async move {
                    let answer = framed_exchange(&*net, to, &framed, &summary).await.ok();
                    let _ = tx.send(Msg::TcpAnswer(token, answer));
                });
            }
            Output::Connect { id, to } => {
                let (net, tx) = (net.clone(), self.tx.clone());
                let h = tokio::task::spawn_local(async move {
                    let r = net.connect(to).await;
                    let _ = tx.send(Msg::Connected(id, Box::new(r)));
                });
                self.tasks.insert(id, h);
            }
            Output::Close { id } => {
                if let Some(h) = self.tasks.remove(&id) {
                    h.abort();
                }
                if let Some(mut c) = self.conns.remove(&id) {
                    let _ = c.shutdown().await;
                }
            }
            Output::Http(req) => {
                let (net, tx, pool) = (net.clone(), self.tx.clone(), self.http.clone());
                tokio::task::spawn_local(async move {
                    let r = http_exchange(&*net, &pool, &req).await;
                    let _ = tx.send(Msg::Http(req.id, Box::new(r)));
                });
            }
            Output::StreamOpen { id, to, dscp } => {
                let (ctx, crx) = mpsc::channel(STREAM_BACKLOG);
                self.streams.insert(id, ctx);
                let (net, tx) = (net.clone(), self.tx.clone());
                tokio::task::spawn_local(stream_actor(net, id, (to, dscp), crx, tx));
            }
            Output::DatagramOpen { id, to, dscp } => {
                let (ctx, crx) = mpsc::channel(STREAM_BACKLOG);
                self.streams.insert(id, ctx);
                let (net, tx) = (net.clone(), self.tx.clone());
                tokio::task::spawn_local(datagram_actor(net, id, (to, dscp), crx, tx));
            }
            Output::StreamSend { id, bytes, summary } => {
                self.command(engine, id, StreamCmd::Send(bytes, summary));
            }
            Output::StreamTls { id, host } => self.command(engine, id, StreamCmd::Tls(host)),
            Output::StreamClose { id } => {
                if let Some(s) = self.streams.remove(&id) {
                    // A full backlog ends the stream anyway: the actor's channel closes.
                    let _ = s.try_send(StreamCmd::Close);
                }
            }
            Output::MediaOpen { port, dscp } => {
                if self.media.contains_key(&port) {
                    return;
                }
                // A port that cannot be bound (taken, in live mode) carries no media; the
                // call goes on, as a real phone's signalling would.
                if let Ok(mut sock) = net.bind_udp(port).await {
                    sock.set_dscp(dscp);
                    let sock = Rc::new(sock);
                    let (s, tx) = (sock.clone(), self.tx.clone());
                    let h = tokio::task::spawn_local(async move {
                        let mut buf = vec![0u8; 2048];
                        while let Ok((n, from)) = s.recv_from(&mut buf).await {
                            if tx.send(Msg::Media(port, from, buf[..n].to_vec())).is_err() {
                                break;
                            }
                        }
                    });
                    self.media.insert(port, (sock, h));
                }
            }
            Output::MediaSend { port, to, bytes } => {
                if let Some((s, _)) = self.media.get(&port) {
                    let _ = s.send_to(&bytes, to).await;
                }
            }
            Output::MediaClose { port } => {
                if let Some((_, h)) = self.media.remove(&port) {
                    h.abort();
                }
            }
            Output::Event(e) => {
                let fields = e.fields().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                net.transcript().event(net.now(), &self.name, e.kind(), fields, &e.to_string());
            }
        }
    }

    /// Hands `cmd` to stream `id`'s task. A stream whose peer does not read as fast as the
    /// engine writes has a full backlog: it fails, rather than queueing without bound.
    fn command(&mut self, engine: &mut Client, id: ConnId, cmd: StreamCmd) {
        let Some(s) = self.streams.get(&id) else { return };
        if let Err(mpsc::error::TrySendError::Full(_)) = s.try_send(cmd) {
            self.streams.remove(&id);
            engine.handle_input(
                self.net.now(),
                Input::StreamFailed { id, reason: NetError::Backlog },
            );
        }
    }

    /// Hands what a task reported to the engine.
    fn feed(&mut self, d: &mut Client, m: Msg) {
        let now = self.net.now();
        let input = match m {
            Msg::StreamOpened(id) => Input::StreamOpened { id },
            Msg::StreamFailed(id, reason) => Input::StreamFailed { id, reason },
            Msg::StreamData(id, bytes) => Input::StreamData { id, bytes },
            Msg::StreamTls(id) => Input::StreamTls { id },
            Msg::Http(id, result) => Input::Http { id, result: *result },
            Msg::Datagram(from, bytes) => Input::Datagram { from, bytes },
            Msg::Media(port, from, bytes) => Input::Media { port, from, bytes },
            Msg::TcpAnswer(token, bytes) => Input::TcpAnswer { token, bytes },
            Msg::Connected(id, r) => {
                self.tasks.remove(&id);
                match *r {
                    Ok(c) => {
                        self.conns.insert(id, c);
                        Input::Connected { id }
                    }
                    Err(e) => Input::ConnectFailed { id, reason: NetError::from_io(&e) },
                }
            }
        };
        d.handle_input(now, input);
    }
}

/// Largest HTTP response body read.
const MAX_HTTP_BODY: usize = 1 << 20;
/// Most response headers kept (hyper bounds the head itself).
const MAX_HTTP_HEADERS: usize = 64;

/// Idle HTTP connections kept per server (address and TLS name), servers kept, and how long
/// one stays idle: under the mock servers' 10 s, so the client ends a quiet connection.
const HTTP_KEEP_PER_SERVER: usize = 2;
const HTTP_KEEP_SERVERS: usize = 16;
const HTTP_KEEP_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// One HTTP request, on a connection kept from an earlier request to the same server or a new
/// one (HTTPS checks the certificate against `req.host`, or `req.tls_name` when set). A kept
/// connection the server closed meanwhile gives way to a new one.
async fn http_exchange<N: Net>(net: &N, pool: &Pool, req: &HttpReq) -> Result<HttpResp, NetError> {
    let name = req.tls_name.as_deref().unwrap_or(&req.host);
    let to = (req.addr, req.tls.then_some(name));
    let what = ((req.method, req.path.as_str()), &req.header_list()[..], &req.body[..]);
    let limits = (MAX_HTTP_HEADERS, MAX_HTTP_BODY);
    match request(net, pool, to, &req.summary(), what, limits).await {
        Ok((status, headers, body)) => Ok(HttpResp { status, headers, body }),
        Err(RequestError::Connect(e)) => Err(NetError::Connect(e)),
        Err(RequestError::TlsSetup(e)) => Err(NetError::TlsSetup(e)),
        Err(RequestError::Tls(e)) => Err(NetError::Tls(e)),
        Err(RequestError::Http(e)) => Err(net_error(e)),
    }
}

fn net_error(e: Http1Error) -> NetError {
    match e {
        Http1Error::Http(e) => NetError::Http(e),
        Http1Error::Body(e) => NetError::Body(e),
    }
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
    mut cmds: mpsc::Receiver<StreamCmd>,
    tx: mpsc::UnboundedSender<Msg>,
) {
    let mut udp = match net.bind_udp(0).await {
        Ok(u) => u,
        Err(e) => {
            let _ = tx.send(Msg::StreamFailed(id, NetError::from_io(&e)));
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
                        let _ = tx.send(Msg::StreamFailed(id, NetError::from_io(&e)));
                        return;
                    }
                }
                Some(StreamCmd::Tls(_)) => {
                    let _ = tx.send(Msg::StreamFailed(id, NetError::TlsOverUdp));
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
                    let _ = tx.send(Msg::StreamFailed(id, NetError::from_io(&e)));
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
    mut cmds: mpsc::Receiver<StreamCmd>,
    tx: mpsc::UnboundedSender<Msg>,
) {
    let mut tcp = match net.connect(to).await {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Msg::StreamFailed(id, NetError::from_io(&e)));
            return;
        }
    };
    tcp.set_dscp(dscp);
    let (local, peer) = (tcp.local_addr(), tcp.peer_addr());
    let _ = tx.send(Msg::StreamOpened(id));
    let mut io: Box<dyn uclab_net::AsyncIo> = Box::new(tcp);
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
                        let _ = tx.send(Msg::StreamFailed(id, NetError::from_io(&e)));
                        return;
                    }
                }
                Some(StreamCmd::Tls(host)) => {
                    let cfg = match net.tls().client_config(&[]) {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = tx.send(Msg::StreamFailed(id, NetError::Tls(e.to_string())));
                            return;
                        }
                    };
                    match net.tls().connect(cfg, &host, io).await {
                        Ok(t) => {
                            io = Box::new(t);
                            let _ = tx.send(Msg::StreamTls(id));
                        }
                        Err(e) => {
                            let _ = tx.send(Msg::StreamFailed(id, NetError::Tls(e.to_string())));
                            return;
                        }
                    }
                }
            },
            // Into the thread's one read buffer, not one per stream (issue 19).
            r = uclab_net::scratch::read_vec(&mut io, 16 * 1024) => match r {
                Ok(b) if b.is_empty() => {
                    let _ = tx.send(Msg::StreamFailed(id, NetError::Closed));
                    return;
                }
                Ok(b) => {
                    let _ = tx.send(Msg::StreamData(id, b));
                }
                Err(e) => {
                    let _ = tx.send(Msg::StreamFailed(id, NetError::from_io(&e)));
                    return;
                }
            },
        }
    }
}

/// One exchange of length-framed messages (a two-byte length first, as DNS over TCP frames
/// them): connect, write `framed`, read one framed answer.
async fn framed_exchange<N: Net>(
    net: &N,
    to: SocketAddr,
    framed: &[u8],
    summary: &str,
) -> std::io::Result<Vec<u8>> {
    let mut c = net.connect(to).await?;
    net.transcript().message(net.now(), c.local_addr(), to, "tcp", summary);
    c.write_all(framed).await?;
    let n = usize::from(c.read_u16().await?);
    let mut buf = vec![0u8; n];
    c.read_exact(&mut buf).await?;
    let _ = c.shutdown().await;
    Ok(buf)
}
