//! CPython's "Using a remote manager", server side: a manager serving a
//! shared queue on TCP, for clients on other machines (see
//! `manager_client.rs`).
//!
//! ```text
//! cargo run --example manager_server -- 0.0.0.0:50000 abracadabra
//! ```
//!
//! Python's version:
//!
//! ```python
//! queue = queue.Queue()
//! class QueueManager(BaseManager): pass
//! QueueManager.register('get_queue', callable=lambda: queue)
//! m = QueueManager(address=('', 50000), authkey=b'abracadabra')
//! m.get_server().serve_forever()
//! ```
//!
//! It prints `listening on <address>` once ready (port 0 picks a free
//! port) and serves until a client sends `shutdown`.

use multiproc::connection::Address;
use multiproc::Manager;
use std::io::Write;

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:50000".into());
    let key = args.next().unwrap_or_else(|| "abracadabra".into());

    let server = Manager::builder()
        .address(Address::tcp(address.as_str())?)
        .authkey(key.as_bytes())
        .serve()?;
    // `register('get_queue', callable=lambda: queue)`: one queue, published
    // under a name for every client.
    let local = server.manager()?;
    let queue = local.queue::<String>()?;
    local.publish("get_queue", &queue)?;
    drop(queue);

    println!("listening on {}", server.address());
    std::io::stdout().flush()?;
    server.wait()
}
