//! A plain host: TCP listeners that accept connections and read until the peer closes, with no
//! application protocol. It stands for a server whose service is not modelled (yet), so that
//! reachability — accepted, refused, filtered — can be tested.

use std::io;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uclab_net::Net;

/// Serves `ports` on `net` until the host stops.
pub async fn serve<N: Net + 'static>(net: N, ports: Vec<u16>) -> io::Result<()> {
    let net = Rc::new(net);
    let mut listeners = Vec::new();
    for p in ports {
        listeners.push(net.listen(p).await?);
    }
    let mut tasks = Vec::new();
    for l in listeners {
        tasks.push(tokio::task::spawn_local(async move {
            while let Ok(mut c) = l.accept().await {
                tokio::task::spawn_local(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = c.read(&mut buf).await {
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
