//! Mock nodes of uclab. Each node kind is an async service over [`uclab_net::Net`],
//! configured from its scenario table; state lives in plain structs tested without I/O.
//!
//! # Layout
//!
//! One module per node kind, a folder when the node runs more than one service; it owns those
//! services, their state and their tests:
//!
//! - [`cucm`]: a CUCM node. `mod.rs` is its HTTP side (UDS on 8443, TFTP-over-HTTP on 6970);
//!   [`cucm::sip`] the cluster's SIP line side: `mod.rs` the cluster state, `proxy.rs` the
//!   request checks and call routing, `registrar.rs`, `blf.rs` (line presence and the
//!   presence trunk's CUCM end), `conf.rs` (the ad hoc conference bridge), `serve.rs` (the
//!   sockets), `tests.rs`.
//! - [`imp`]: an IM&P node. `mod.rs` the node's configuration, users, sessions and one-time
//!   passwords; [`imp::soap`] (EPAS), [`imp::xmpp`] (client connections), [`imp::router`]
//!   (the cluster's rosters, presence and messages: `mod.rs`, `roster.rs`, `presence.rs`,
//!   `federation.rs` (other domains: SPEC FED1, FED5), `tests.rs`), [`imp::hub`] (the router with its sessions' bounded mailboxes: the router
//!   returns what to deliver, the hub hands it out), [`imp::muc`] (text conferencing),
//!   [`imp::trunk`] (the presence trunk's IM&P end).
//! - [`srst`]: the SRST router, CUCM's SIP service in its SRST mode.
//! - A foreign XMPP domain (`xmpp-domain` nodes) runs [`imp::xmpp`] and [`imp::router`] with
//!   its own domain and accounts, and [`s2s`].
//! - [`s2s`]: XMPP server-to-server streams (SPEC FED1), shared by IM&P's federation nodes and
//!   foreign domains: `stream.rs` the sans-IO engine (`stream/inbound.rs` the receiving side),
//!   [`s2s::serve`] the listener, the outbound streams and their routes, `tests.rs`.
//! - [`expressway`]: Expressway-E and -C (MRA). `mod.rs` the zone's timers, bounds and
//!   frame I/O; [`expressway::e`] (the edge and E's end of the traversal zone),
//!   [`expressway::zone`] (C's end of the zones), [`expressway::handle`] (what C does with a
//!   request), [`expressway::c`] (C's settings and state), and the pure or small parts they
//!   use: [`expressway::traversal`] (frames), [`expressway::allow`] (the HTTP allow list),
//!   [`expressway::tokens`] (`X-Auth`), [`expressway::upstream`] (C's HTTP client inside),
//!   `tests.rs`.
//! - [`dns`], [`cas`]: one-service nodes, a file each.
//! - [`s2s`]: XMPP server-to-server streams (federation, issue 18): the sans-IO engine
//!   (`mod.rs` the API, `stream.rs` the engine, `tests.rs`) that IM&P's federation service and
//!   federation peers drive.
//! - [`sipfed`]: SIP federation with a Lync/Skype-style domain (SPEC FED3): the sans-IO
//!   endpoint (`endpoint.rs`), its mutual-TLS service (`serve.rs`), `tests.rs`; driven by
//!   IM&P's gateway ([`imp::sipgw`]) and by [`sip_domain`], the foreign SIP domain's node kind
//!   with its scripted users.
//!
//! Beside them, what every node uses: [`http`] (the HTTP(S) server), [`host`] (a host with
//! open ports and no protocol), [`limits`] (connection caps), [`lockout`] (the user
//! directory's credential policy, shared by CUCM and IM&P), [`resolve`] (the nodes' stub
//! resolver: Expressway-C's lookups inside, XMPP servers' `_xmpp-server._tcp`).
//!
//! A new node kind gets its
//! own module here, a folder once it has a second service, and takes only the shared modules
//! and the services it really talks to. Imports go one way: node kinds use the shared modules,
//! never the reverse; `srst` and `imp::trunk` use `cucm::sip` (the code SRST runs, and the
//! PIDF, tags and transcript form of the trunk's other end), and nothing in `cucm` names
//! them. Inside a folder the parts use `mod.rs` and each other one way (`imp::router` uses
//! `imp::muc`; `imp::xmpp` uses the router). Benches and models that only drive these
//! services (CAP2's `capacity`, the REGISTER bench) live in `uclab-sim`, not here.
//!
//! To put a new node kind into runs: its scenario table is read in `uclab-sim`'s
//! `scenario/nodes.rs` (and listed in `NODE_KINDS`), its services and ports are planned and
//! started in `uclab-sim`'s `nodes/` (`NodePlan`), and `uclab serve` takes it from there.
//! State that a cluster's nodes share (a router, a registrar) is made once per run there and
//! handed to each node; it returns its outputs and holds no channels, and the node's serving
//! code hands them to the connections.

pub mod cas;
pub mod cucm;
pub mod dns;
pub mod expressway;
pub mod host;
pub mod http;
pub mod imp;
pub mod limits;
pub mod lockout;
pub mod resolve;
pub mod s2s;
pub mod sip_domain;
pub mod sipfed;
pub mod srst;
