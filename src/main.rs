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
        /// Seed for the mocks' random choices.
        #[arg(long, default_value_t = 1)]
        seed: u64,
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
        /// Seed for the client's random choices and of the lab CA it trusts (as `serve`'s).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Run { paths, seed, out } => commands::cmd_run(&paths, seed, &out),
        Cmd::Check { paths } => commands::cmd_check(&paths),
        Cmd::List { dir } => commands::cmd_list(dir.as_deref()),
        Cmd::Sweep { file, seeds, jobs } => commands::cmd_sweep(&file, &seeds, jobs),
        Cmd::Serve { file, bind, ports_json, ca_pem, seed } => commands::cmd_serve(
            file.as_deref(),
            bind,
            ports_json.as_deref(),
            ca_pem.as_deref(),
            seed,
        ),
        Cmd::Probe { domain, dns, user, password, json, seed } => {
            let credentials = match (user, password) {
                (Some(u), Some(p)) => Some((u, p)),
                (None, None) => None,
                _ => {
                    eprintln!("error: --user and --password go together");
                    std::process::exit(commands::EXIT_BAD_INPUT);
                }
            };
            commands::cmd_probe(&domain, dns, credentials, json, seed)
        }
    };
    std::process::exit(code);
}
