//! Connections: [`Pipe`], [`wait`], [`Listener`] / [`Client`] — Python's
//! `multiprocessing.connection`, wire-compatible with CPython.
//!
//! A [`Connection`] carries framed messages over a socket or a pipe. The
//! framing (4-byte big-endian length, or `-1` and an 8-byte length for
//! messages over 2 GiB) and the authentication handshake are CPython's, byte
//! for byte, so [`send_bytes`](Connection::send_bytes) /
//! [`recv_bytes`](Connection::recv_bytes) talk to Python processes, and with
//! the `pickle` feature so do `send_pickle` / `recv_pickle`.
//!
//! ```
//! use multiproc::connection::{wait, Pipe};
//! use std::time::Duration;
//!
//! let (parent, child) = Pipe::duplex()?;
//! child.send(&[1u32, 2, 3][..])?; // a slice arrives as a Vec
//! assert!(parent.poll(Some(Duration::from_secs(5)))?);
//! assert_eq!(parent.recv::<Vec<u32>>()?, vec![1, 2, 3]);
//! assert!(wait(&[&parent], Some(Duration::ZERO))?.is_empty());
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! Connections reach child processes as [`Process`](crate::Process)
//! arguments ([`Handoff`](crate::handoff::Handoff)), or over another
//! connection with [`Connection::send_connection`].

mod address;
mod auth;
mod conn;
mod fds;
pub use crate::sys::framing;
mod listener;
mod pipe;
mod wait;

pub use address::Address;
pub use conn::Connection;
pub use framing::DEFAULT_MAX_MESSAGE_SIZE;
pub use listener::{
    Client, ClientBuilder, Listener, ListenerBuilder, DEFAULT_HANDSHAKE_TIMEOUT,
    MAX_PENDING_HANDSHAKES,
};
pub use pipe::Pipe;
pub use wait::{wait, Waitable};
