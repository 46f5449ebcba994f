//! How values and resources reach a child at creation.
//!
//! CPython's guideline "better to inherit than pickle" becomes a type rule
//! here. A [`Process`](crate::Process) target receives its arguments through
//! [`Args`], a tuple whose every element is [`Handoff`]:
//!
//! - every `Serialize + DeserializeOwned` value is `Handoff` (blanket impl): it
//!   is encoded with the [codec] and decoded in the child;
//! - a *resource* (a pipe end, a queue, a lock, shared memory) implements
//!   `Handoff` by hand: on the parent side it registers its file descriptors
//!   with the [`Exporter`] and writes a small token; on the child side the
//!   [`Importer`] gives back descriptors that refer to the same kernel objects
//!   and the token rebuilds the handle.
//!
//! Resources are deliberately **not** `Serialize`, so putting one into a queue
//! or a pipe does not compile: they travel only at creation, which is what
//! makes them work the same under every start method:
//!
//! - *fork*: descriptors are inherited at the same numbers;
//! - *spawn*: the registered descriptors travel with the start message
//!   (`SCM_RIGHTS`); the child inherits no other descriptor of the parent;
//! - *forkserver*: the same list travels by `SCM_RIGHTS` to the fork server,
//!   whose child gets them.
//!
//! In every case the child rebuilds fresh handles from descriptors; no
//! in-process state (threads, locks held by other threads, buffers) crosses.
//!
//! # Implementing `Handoff` for a resource
//!
//! ```
//! use multiproc::handoff::{Exporter, Handoff, Importer};
//! use std::os::fd::{AsFd, OwnedFd};
//!
//! struct MyPipeEnd { fd: OwnedFd, label: String }
//!
//! impl Handoff for MyPipeEnd {
//!     fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> multiproc::Result<()> {
//!         ex.write_fd(self.fd.as_fd())?;
//!         ex.write(&self.label)
//!     }
//!     fn import(im: &mut Importer) -> multiproc::Result<Self> {
//!         Ok(MyPipeEnd { fd: im.read_fd()?, label: im.read()? })
//!     }
//! }
//! ```
//!
//! An impl works with the exporter and importer it is handed; only the crate
//! makes them, so no safe code can feed a resource's `import` bytes that no
//! export wrote (use [`round_trip`] to move values through the mechanism):
//!
//! ```compile_fail,E0624
//! let im = multiproc::handoff::Importer::new(vec![0; 16], Vec::new());
//! ```
//!
//! Still, every `import` of the crate treats its bytes as untrusted: a bad
//! token gives an error, and a function (a barrier's action) is found only
//! through a validated name, never rebuilt from a raw address.
#![allow(unsafe_code)]

use crate::codec;
use crate::error::{Error, Result};
use crate::sys::Region;
use serde::{de::DeserializeOwned, Serialize};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// A value that can be handed to a child process at its creation.
///
/// Implemented for every `Serialize + DeserializeOwned` type, and by hand for
/// resources that carry file descriptors. See the [module docs](self).
pub trait Handoff: Sized {
    /// Writes this value's token into `ex`, registering any descriptors.
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()>;
    /// Rebuilds the value in the child from what [`export`](Self::export) wrote.
    fn import(im: &mut Importer) -> Result<Self>;
}

impl<T: Serialize + DeserializeOwned> Handoff for T {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        ex.write(self)
    }
    fn import(im: &mut Importer) -> Result<Self> {
        im.read()
    }
}

/// The arguments of a process target: a tuple of [`Handoff`] values, as in
/// Python's `args=(a, b)` (a single argument is `(a,)`; no arguments is `()`).
pub trait Args: Sized {
    /// Exports every element in order.
    fn export_all<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()>;
    /// Imports every element in order.
    fn import_all(im: &mut Importer) -> Result<Self>;
}

macro_rules! impl_args {
    ($($name:ident)*) => {
        impl<$($name: Handoff),*> Args for ($($name,)*) {
            #[allow(non_snake_case, unused_variables)]
            fn export_all<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
                let ($($name,)*) = self;
                $($name.export(ex)?;)*
                Ok(())
            }
            #[allow(unused_variables, clippy::unused_unit)]
            fn import_all(im: &mut Importer) -> Result<Self> {
                Ok(($($name::import(im)?,)*))
            }
        }
    };
}
impl_args!();
impl_args!(A);
impl_args!(A B);
impl_args!(A B C);
impl_args!(A B C D);
impl_args!(A B C D E);
impl_args!(A B C D E F);
impl_args!(A B C D E F G);
impl_args!(A B C D E F G H);
impl_args!(A B C D E F G H I);
impl_args!(A B C D E F G H I J);
impl_args!(A B C D E F G H I J K);
impl_args!(A B C D E F G H I J K L);

/// The parent side of a handoff: collects encoded bytes and the descriptors
/// the child must receive.
///
/// Only the crate creates exporters and importers (a [`Handoff`] impl is
/// handed one); to move values through the mechanism yourself, use
/// [`round_trip`].
#[derive(Debug)]
pub struct Exporter<'a> {
    bytes: Vec<u8>,
    fds: Vec<BorrowedFd<'a>>,
}

impl<'a> Exporter<'a> {
    /// An empty exporter.
    pub(crate) fn new() -> Self {
        Exporter {
            bytes: Vec::new(),
            fds: Vec::new(),
        }
    }

    /// Appends a serde value.
    pub fn write<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        codec::encode_into(value, &mut self.bytes)
    }

    /// Registers `fd` to be passed to the child and returns its slot. The same
    /// descriptor registered twice gets the same slot.
    pub fn push_fd(&mut self, fd: BorrowedFd<'a>) -> u32 {
        let raw = fd.as_raw_fd();
        if let Some(i) = self.fds.iter().position(|f| f.as_raw_fd() == raw) {
            return i as u32;
        }
        self.fds.push(fd);
        (self.fds.len() - 1) as u32
    }

    /// Registers `fd` and writes its slot, for [`Importer::read_fd`].
    pub fn write_fd(&mut self, fd: BorrowedFd<'a>) -> Result<()> {
        let slot = self.push_fd(fd);
        self.write(&slot)
    }

    /// The encoded bytes so far.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The registered descriptors, in slot order.
    pub fn fds(&self) -> &[BorrowedFd<'a>] {
        &self.fds
    }

    /// The raw numbers of the registered descriptors, in slot order.
    pub fn raw_fds(&self) -> Vec<RawFd> {
        self.fds.iter().map(|f| f.as_raw_fd()).collect()
    }

    /// Splits into the bytes and the descriptors.
    pub fn into_parts(self) -> (Vec<u8>, Vec<BorrowedFd<'a>>) {
        (self.bytes, self.fds)
    }
}

/// The child side of a handoff: reads what the [`Exporter`] wrote and hands
/// out owned descriptors for the registered slots.
///
/// Each [`read_fd`](Self::read_fd) returns a fresh duplicate (close-on-exec),
/// so a descriptor exported twice becomes two independent owned handles; the
/// received originals are closed when the importer is dropped.
///
/// Only the crate builds importers, over what an [`Exporter`] wrote in this
/// process or in the parent. The bytes are still treated as untrusted: every
/// `import` of the crate checks what it reads (a bad token gives an error),
/// and functions are only ever found through validated names.
#[derive(Debug)]
pub struct Importer {
    bytes: Vec<u8>,
    pos: usize,
    fds: Vec<Option<OwnedFd>>,
}

impl Importer {
    /// Builds an importer over received bytes and descriptors (slot order).
    pub(crate) fn new(bytes: Vec<u8>, fds: Vec<OwnedFd>) -> Self {
        Importer {
            bytes,
            pos: 0,
            fds: fds.into_iter().map(Some).collect(),
        }
    }

    /// Reads the next serde value.
    pub fn read<T: DeserializeOwned>(&mut self) -> Result<T> {
        let (v, rest) = codec::decode_prefix(&self.bytes[self.pos..])?;
        self.pos = self.bytes.len() - rest.len();
        Ok(v)
    }

    /// A fresh owned duplicate of the descriptor in `slot`.
    pub fn fd(&self, slot: u32) -> Result<OwnedFd> {
        let fd = self
            .fds
            .get(slot as usize)
            .and_then(|f| f.as_ref())
            .ok_or_else(|| {
                Error::bootstrap(format!(
                    "handoff names descriptor slot {slot}, which was not received"
                ))
            })?;
        Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
    }

    /// Reads a slot written by [`Exporter::write_fd`] and returns its descriptor.
    pub fn read_fd(&mut self) -> Result<OwnedFd> {
        let slot: u32 = self.read()?;
        self.fd(slot)
    }

    /// `true` when every byte has been read.
    pub fn is_done(&self) -> bool {
        self.pos == self.bytes.len()
    }
}

/// Exports `args` and imports them again in this process, as a child would:
/// a round trip through the handoff mechanism (used by tests, and by threads
/// that want handles independent of the originals).
pub fn round_trip<A: Args>(args: &A) -> Result<A> {
    let mut ex = Exporter::new();
    args.export_all(&mut ex)?;
    let fds = ex
        .fds()
        .iter()
        .map(|f| rustix::io::fcntl_dupfd_cloexec(f, 3).map_err(Error::from))
        .collect::<Result<Vec<_>>>()?;
    let mut im = Importer::new(ex.bytes().to_vec(), fds);
    A::import_all(&mut im)
}

/// A region travels as its descriptor and its length; the child maps it
/// at an address of its own (see `sys::region`).
impl Handoff for Region {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        ex.write_fd(self.fd())?;
        ex.write(&(self.len() as u64))
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let fd = im.read_fd()?;
        let len: u64 = im.read()?;
        Region::from_fd(fd, len as usize)
    }
}
