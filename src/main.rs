//! `uclab`: a deterministic network lab for enterprise unified communications.
//! This file parses arguments; the commands live in `uclab_sim::commands`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use uclab_sim::commands;

#[derive(Parser)]
#[command(
    name = "uclab",
    version,
    about = "Deterministic network lab for enterprise unified communications"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Randomness, trust and reach of the live client commands (issue 13).
#[derive(clap::Args)]
struct Live {
    /// For tests only: a fixed seed for the client's random choices and the lab CA of that seed
    /// trusted (as `serve --seed`'s). Without it everything random comes from the OS.
    #[arg(long)]
    seed: Option<u64>,
    /// Trust this CA (PEM), e.g. the one `uclab serve --ca-pem` wrote.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Send to addresses outside loopback and the servers named (by default such a connect or
    /// send is refused: "outside the lab").
    #[arg(long)]
    allow_remote: bool,
}

impl Live {
    fn args(self) -> commands::LiveArgs {
        commands::LiveArgs { seed: self.seed, ca: self.ca, allow_remote: self.allow_remote }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenarios (no path: the built-in showcase suite). Exit 0 all pass, 1 a failure, 2 bad input.
    Run {
        /// Scenario files or directories.
        paths: Vec<PathBuf>,
        /// Seed (default: each scenario's own).
        #[arg(long)]
        seed: Option<u64>,
        /// Output directory.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Leave out load scenarios (`heavy = true`: thousands of clients, minutes each).
        #[arg(long)]
        skip_heavy: bool,
    },
    /// Draw a finished run's ladder again (text on stdout), filtered: who sent what to whom.
    Ladder {
        /// The run's output directory (where `uclab run` wrote transcript.txt).
        dir: PathBuf,
        /// Rows at or after this simulated time (`2s`, `1500ms`).
        #[arg(long, value_parser = duration)]
        from: Option<std::time::Duration>,
        /// Rows at or before this simulated time.
        #[arg(long, value_parser = duration)]
        to: Option<std::time::Duration>,
        /// Protocols, comma-separated (`sip,xmpp`; `sip` also takes `sip-edge`, `soap` the SOAP requests).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Rows that touch this node or client (repeat for more).
        #[arg(long)]
        node: Vec<String>,
        /// Write the HTML page here instead.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Validate scenario files; errors as file:line:col: message.
    Check {
        /// Scenario files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// List scenarios with their summary and SPEC ids.
    List {
        /// Directory (default: ./scenarios, or the built-in showcase).
        dir: Option<PathBuf>,
    },
    /// Run one scenario over many seeds; print failing seeds and how to replay each.
    Sweep {
        /// Scenario file.
        file: PathBuf,
        /// Seeds: A..B (B excluded) or one seed.
        #[arg(long)]
        seeds: String,
        /// Parallel jobs.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
    },
    /// Serve the topology's mocks on real sockets.
    Serve {
        /// Scenario whose topology to serve (default: the built-in topology).
        file: Option<PathBuf>,
        /// Address to bind (loopback unless told otherwise).
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
        /// Write the port map here as JSON.
        #[arg(long)]
        ports_json: Option<PathBuf>,
        /// Write the lab CA certificate here (PEM), for clients to trust.
        #[arg(long)]
        ca_pem: Option<PathBuf>,
        /// For tests only: a fixed seed for session keys, one-time passwords, nonces and the
        /// lab CA, so that two instances hand out the same secrets. Without it they come from
        /// the OS random source.
        #[arg(long)]
        seed: Option<u64>,
        /// Write the capture here as pcapng as it happens (TLS keys included); without it
        /// serve keeps none.
        #[arg(long)]
        capture: Option<PathBuf>,
        /// Write the transcript here as it happens (stderr shows at most 100 lines a second).
        #[arg(long)]
        transcript: Option<PathBuf>,
    },
    /// Run the real client core's discovery against real servers.
    Probe {
        /// Services domain.
        #[arg(long)]
        domain: String,
        /// DNS server (ip:port).
        #[arg(long)]
        dns: SocketAddr,
        /// User name for sign-in.
        #[arg(long)]
        user: Option<String>,
        /// Password for sign-in.
        #[arg(long)]
        password: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        live: Live,
    },
    /// Sign the real client core in to a plain XMPP server (STARTTLS, SASL PLAIN; no SOAP),
    /// send messages and report what arrived.
    ProbeXmpp {
        /// XMPP server (ip:port).
        #[arg(long)]
        server: SocketAddr,
        /// XMPP domain; the server's certificate must name it.
        #[arg(long)]
        domain: String,
        /// User (local part).
        #[arg(long)]
        user: String,
        /// Password.
        #[arg(long)]
        password: String,
        /// A message to send once signed in, `JID=BODY` (repeatable; one a second).
        #[arg(long = "message")]
        messages: Vec<String>,
        /// How long to stay signed in, e.g. `5s`.
        #[arg(long, default_value = "5s")]
        wait: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        live: Live,
    },
    /// Register the real client core's softphone (SIP over TCP, digest answered) to a SIP
    /// registrar, and report what happened.
    ProbeSip {
        /// Registrar (ip:port); repeat for backups, which get the keepalive REGISTER.
        #[arg(long = "server", required = true)]
        servers: Vec<SocketAddr>,
        /// Digest user.
        #[arg(long)]
        user: String,
        /// Password.
        #[arg(long, default_value = "")]
        password: String,
        /// Directory number to register.
        #[arg(long)]
        line: String,
        /// How long to stay registered, e.g. `3s`.
        #[arg(long, default_value = "3s")]
        wait: String,
        /// Call this number once registered.
        #[arg(long)]
        call: Option<String>,
        /// When to call (from the start), e.g. `1s`.
        #[arg(long, default_value = "1s")]
        call_at: String,
        /// When to hang up (from the start), e.g. `3s`.
        #[arg(long)]
        hangup_at: Option<String>,
        /// Answer incoming calls.
        #[arg(long)]
        answer: bool,
        /// SIP over UDP (one message per datagram, OPTIONS keepalives) instead of TCP.
        #[arg(long)]
        udp: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        live: Live,
    },
    /// Issue a certificate of the lab CA (for a real server the lab's clients should trust).
    Pki {
        /// DNS names (or IP addresses) the certificate names.
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Where to write its private key (PKCS#8 PEM).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the lab CA certificate (PEM).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// For tests only: the lab CA of this seed (as `serve --seed`'s). Without it a new CA
        /// from the OS random source: write it with `--ca`.
        #[arg(long)]
        seed: Option<u64>,
    },
}

/// A duration as scenario files write it.
fn duration(s: &str) -> Result<std::time::Duration, String> {
    uclab_sim::time::parse_duration(s)
}

/// mimalloc: the same bytes, a quarter less CPU than glibc's allocator on the large runs
/// (issue 19, docs/decisions.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Run { paths, seed, out, skip_heavy } => {
            commands::cmd_run(&paths, seed, &out, skip_heavy)
        }
        Cmd::Check { paths } => commands::cmd_check(&paths),
        Cmd::Ladder { dir, from, to, only, node, html } => {
            let only = only.into_iter().map(|o| o.trim().to_ascii_lowercase()).collect();
            let filter = uclab_sim::ladder::Filter { from, to, only, nodes: node };
            commands::cmd_ladder(&dir, &filter, html.as_deref())
        }
        Cmd::List { dir } => commands::cmd_list(dir.as_deref()),
        Cmd::Sweep { file, seeds, jobs } => commands::cmd_sweep(&file, &seeds, jobs),
        Cmd::Serve { file, bind, ports_json, ca_pem, seed, capture, transcript } => {
            commands::cmd_serve(
                file.as_deref(),
                bind,
                ports_json.as_deref(),
                ca_pem.as_deref(),
                seed,
                uclab_sim::live::Keep { capture, transcript },
            )
        }
        Cmd::ProbeSip {
            servers,
            user,
            password,
            line,
            wait,
            call,
            call_at,
            hangup_at,
            answer,
            udp,
            json,
            live,
        } => {
            let parse = |name: &str, v: &str| {
                uclab_sim::time::parse_duration(v).map_err(|e| format!("--{name}: {e}"))
            };
            let calls = (|| {
                Ok::<_, String>(uclab_sim::live::SipProbeCalls {
                    call,
                    call_at: parse("call-at", &call_at)?,
                    hangup_at: hangup_at.as_deref().map(|h| parse("hangup-at", h)).transpose()?,
                    answer,
                    udp,
                })
            })();
            match (parse("wait", &wait), calls) {
                (Ok(w), Ok(calls)) => commands::cmd_probe_sip(
                    servers,
                    (&user, &password),
                    &line,
                    (w, calls),
                    json,
                    &live.args(),
                ),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("error: {e}");
                    2
                }
            }
        }
        Cmd::ProbeXmpp { server, domain, user, password, messages, wait, json, live } => {
            let mut parsed = Vec::new();
            for m in &messages {
                match m.split_once('=') {
                    Some((to, body)) if to.contains('@') => {
                        parsed.push((to.to_owned(), body.to_owned()))
                    }
                    _ => {
                        eprintln!("error: bad --message `{m}`: expected JID=BODY");
                        std::process::exit(2);
                    }
                }
            }
            match uclab_sim::time::parse_duration(&wait) {
                Ok(w) => commands::cmd_probe_xmpp(
                    server,
                    &domain,
                    (&user, &password),
                    parsed,
                    w,
                    json,
                    &live.args(),
                ),
                Err(e) => {
                    eprintln!("error: --wait: {e}");
                    2
                }
            }
        }
        Cmd::Pki { names, cert, key, ca, seed } => {
            commands::cmd_pki(seed, &names, &cert, &key, ca.as_deref())
        }
        Cmd::Probe { domain, dns, user, password, json, live } => {
            let credentials = match (user, password) {
                (Some(u), Some(p)) => Some((u, p)),
                (None, None) => None,
                _ => {
                    eprintln!("error: --user and --password go together");
                    std::process::exit(commands::EXIT_BAD_INPUT);
                }
            };
            commands::cmd_probe(&domain, dns, credentials, json, &live.args())
        }
    };
    std::process::exit(code);
}
