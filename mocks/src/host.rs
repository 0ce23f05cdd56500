//! A plain host: TCP listeners that accept connections and read until the peer closes, with no
//! application protocol. It stands for a server whose service is not modelled (yet), so that
//! reachability — accepted, refused, filtered — can be tested.
//!
//! Issue 13: a connection with nothing from the peer for [`IDLE`] is closed, and a listener
//! holds at most [`limits::STREAM_CONNECTIONS`], [`limits::PER_PEER`] from one address.

use std::io;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uclab_net::Net;

use crate::limits::{self, ConnLimit};

/// A connection this long without a byte from the peer is closed (as SIP/TCP's idle time).
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(300);

/// Serves `ports` on `net` until the host stops.
pub async fn serve<N: Net + 'static>(net: N, ports: Vec<u16>) -> io::Result<()> {
    let net = Rc::new(net);
    let mut listeners = Vec::new();
    for p in ports {
        listeners.push(net.listen(p).await?);
    }
    let mut tasks = Vec::new();
    for l in listeners {
        let limit = ConnLimit::new(limits::STREAM_CONNECTIONS, limits::PER_PEER);
        tasks.push(tokio::task::spawn_local(async move {
            loop {
                let mut c = limits::next_conn(&l).await;
                let Some(slot) = limit.admit(c.peer_addr().ip()) else { continue };
                tokio::task::spawn_local(async move {
                    let _slot = slot;
                    let mut buf = [0u8; 4096];
                    while let Ok(Ok(n)) = uclab_net::time::timeout(IDLE, c.read(&mut buf)).await {
                        if n == 0 {
                            break;
                        }
                    }
                    let _ = c.shutdown().await;
                });
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}
