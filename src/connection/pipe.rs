//! `Pipe`: a connected pair of [`Connection`]s.

use super::Connection;
use crate::error::Result;

/// Creates connected pairs of [`Connection`]s (Python's `Pipe(duplex)`).
///
/// `Pipe` is only a namespace: [`Pipe::duplex`] (a Unix socketpair, both ends
/// send and receive) and [`Pipe::simplex`] (a pipe(2): a reader and a writer).
///
/// ```
/// use multiproc::connection::Pipe;
///
/// let (reader, writer) = Pipe::simplex()?;
/// writer.send(&42u64)?;
/// assert_eq!(reader.recv::<u64>()?, 42);
/// assert!(writer.recv::<u64>().is_err()); // a writer cannot receive
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub enum Pipe {}

impl Pipe {
    /// Two ends of a Unix stream socketpair; each can send and receive.
    /// Both can also carry connections ([`Connection::send_connection`]).
    pub fn duplex() -> Result<(Connection, Connection)> {
        let (a, b) = crate::sys::conn_io::stream_pair()?;
        Ok((
            Connection::from_parts(a, true, true, true),
            Connection::from_parts(b, true, true, true),
        ))
    }

    /// `(reader, writer)`: the two ends of a pipe(2), as Python's
    /// `Pipe(duplex=False)` returns them.
    pub fn simplex() -> Result<(Connection, Connection)> {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok((
            Connection::from_parts(r, true, false, false),
            Connection::from_parts(w, false, true, false),
        ))
    }

    /// Python's `Pipe(duplex)`: [`duplex`](Self::duplex) or [`simplex`](Self::simplex).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(duplex: bool) -> Result<(Connection, Connection)> {
        if duplex {
            Self::duplex()
        } else {
            Self::simplex()
        }
    }
}
