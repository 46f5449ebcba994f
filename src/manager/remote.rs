//! Serving in this process (Python's `manager.get_server().serve_forever()`),
//! for a program whose job is to be a remote manager.

use super::server::Server;
use super::token::WireAddr;
use super::Manager;
use crate::connection::{Address, Listener};
use crate::error::{Error, Result};
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;

/// A manager server running in this process, from
/// [`ManagerBuilder::serve`](super::ManagerBuilder::serve).
///
/// **Drop**: dropping the handle does not stop the server; it serves until
/// a client shuts it down (or the process exits).
///
/// ```
/// use multiproc::connection::Address;
/// use multiproc::manager::{Manager, QueueProxy};
///
/// let server = Manager::builder()
///     .address(Address::tcp("127.0.0.1:0")?)
///     .authkey(b"abracadabra")
///     .serve()?;
/// let local = server.manager()?;
/// local.publish("jobs", &local.queue::<String>()?)?;
///
/// // Another program (here: the same one) connects with address and key.
/// let remote = Manager::connect(&server.address(), b"abracadabra")?;
/// let q: QueueProxy<String> = remote.lookup("jobs")?;
/// q.put("hello".into())?;
/// assert_eq!(local.lookup::<QueueProxy<String>>("jobs")?.get()?, "hello");
///
/// remote.shutdown()?; // any client may stop it, as in CPython
/// server.wait()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ServerHandle {
    address: WireAddr,
    authkey: Vec<u8>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

pub(crate) fn serve_in_background(
    server: Arc<Server>,
    listener: Listener,
    authkey: Vec<u8>,
) -> Result<ServerHandle> {
    let address = WireAddr::from(listener.address());
    let thread = std::thread::Builder::new()
        .name("manager-server".into())
        .spawn(move || server.serve(listener))?;
    Ok(ServerHandle {
        address,
        authkey,
        thread: Some(thread),
    })
}

impl ServerHandle {
    /// The address clients connect to (with the actual port for TCP port 0).
    pub fn address(&self) -> Address {
        Address::from(&self.address)
    }

    /// A client of this server, to create and publish objects.
    pub fn manager(&self) -> Result<Manager> {
        Manager::connect(&self.address(), &self.authkey)
    }

    /// Waits until a client shuts the server down (Python's `serve_forever`).
    pub fn wait(mut self) -> Result<()> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| Error::Remote("the server thread panicked".into()))?,
            None => Ok(()),
        }
    }

    /// Stops the server and waits for it.
    pub fn shutdown(self) -> Result<()> {
        self.manager()?.shutdown()?;
        self.wait()
    }
}
