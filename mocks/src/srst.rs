//! The SRST router (SPEC CC5): the branch gateway that takes the site's phones while CUCM is
//! out of reach. CUCM names it in each device's cnf.xml (`srst` in
//! [`crate::cucm::CucmConfig`]); a phone that loses its CUCM nodes registers here and goes
//! back once CUCM answers again (the client's failover engine).
//!
//! It is CUCM's SIP line side ([`crate::cucm::sip`]) in its SRST mode ([`SipConfig::srst`]),
//! not a service of its own: the same registrar and proxy, with what the router does
//! differently switched on there. It takes whatever device registers for a line, with no
//! digest; grants the expiry asked for up to an hour rather than CUCM's 120 s; routes basic
//! calls between the site's lines; and refuses what SRST lacks: transfer (REFER, 501),
//! presence subscriptions (489) and ad hoc conferencing (no bridge). This module builds that
//! configuration and serves it.

use std::cell::RefCell;
use std::rc::Rc;

use crate::cucm::sip::{ClusterIo, SipConfig, SipLine};

/// The SRST router's SIP settings: `lines` of the site's devices in `domain`, in SRST mode and
/// without digest (the router accepts what registers).
pub fn sip_config(domain: &str, lines: Vec<SipLine>) -> SipConfig {
    SipConfig { domain: domain.into(), lines, srst: true, ..SipConfig::default() }
}

/// Serves router `host`'s SIP on UDP and TCP `port` (no TLS) into `cluster`, a
/// [`crate::cucm::sip::Cluster`] made from [`sip_config`], until the router stops.
pub async fn serve<N: uclab_net::Net + Clone + 'static>(
    net: N,
    host: String,
    port: u16,
    cluster: Rc<RefCell<ClusterIo>>,
) -> std::io::Result<()> {
    let names = vec![host.clone()];
    crate::cucm::sip::serve(net, host, (port, None), names, cluster).await
}
