//! CPython's "Using a remote manager", client side: connect to
//! `manager_server` with address and key and use its queue.
//!
//! ```text
//! cargo run --example manager_client -- 127.0.0.1:50000 abracadabra put hello
//! cargo run --example manager_client -- 127.0.0.1:50000 abracadabra get
//! cargo run --example manager_client -- 127.0.0.1:50000 abracadabra shutdown
//! ```
//!
//! Python's version:
//!
//! ```python
//! class QueueManager(BaseManager): pass
//! QueueManager.register('get_queue')
//! m = QueueManager(address=('foo.bar.org', 50000), authkey=b'abracadabra')
//! m.connect()
//! queue = m.get_queue()
//! queue.put('hello')        # in one client
//! print(queue.get())        # in another: 'hello'
//! ```
//!
//! Exit status 0 on success; errors (a wrong key, say) are printed and
//! exit with status 1.

use multiproc::connection::Address;
use multiproc::manager::QueueProxy;
use multiproc::Manager;

fn run() -> multiproc::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, key, command, rest @ ..] = args.as_slice() else {
        eprintln!("usage: manager_client ADDRESS KEY put MESSAGE | get | shutdown");
        std::process::exit(2);
    };
    let m = Manager::connect(&Address::tcp(address.as_str())?, key.as_bytes())?;
    match command.as_str() {
        "put" => {
            let queue: QueueProxy<String> = m.lookup("get_queue")?;
            queue.put(rest.join(" "))?;
        }
        "get" => {
            let queue: QueueProxy<String> = m.lookup("get_queue")?;
            println!("{}", queue.get()?);
        }
        "shutdown" => m.shutdown()?,
        other => {
            eprintln!("unknown command {other:?}");
            std::process::exit(2);
        }
    }
    Ok(())
}

fn main() {
    multiproc::init();
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
