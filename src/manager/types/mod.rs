//! The builtin shared types of a manager (CPython's `SyncManager`
//! registrations): containers that store encoded values, and
//! synchronization primitives that block in the server.
//!
//! Each file holds one family: the server-side object and its typed proxy.

pub(crate) mod barrier;
pub(crate) mod condition;
pub(crate) mod dict;
pub(crate) mod list;
pub(crate) mod namespace;
pub(crate) mod queue;
pub(crate) mod sync;

use super::collect::encode_collecting;
use super::fault::BuiltinError;
use super::proxy::ProxyCore;
use super::registry::{CallCx, Fail, ObjRef, Object, Out, Stored};
use super::token::Endpoint;
use super::wire::{Raw, RawRef, Value, ValueRef};
use crate::codec;
use crate::error::Result;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How a blocking call waits, as it travels to the server.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum Wait {
    /// Until it can proceed.
    Block,
    /// Not at all.
    Try,
    /// At most this long.
    For(Duration),
}

impl Wait {
    pub(crate) fn deadline(self) -> Option<Instant> {
        match self {
            Wait::Block => None,
            Wait::Try => Some(Instant::now()),
            Wait::For(d) => Instant::now().checked_add(d),
        }
    }
}

/// Builds a builtin object, or `None` if `typeid` is not a builtin.
/// `refs` holds the objects the arguments name.
pub(crate) fn make_builtin(
    typeid: &str,
    args: &[u8],
    refs: &[ObjRef],
) -> Option<std::result::Result<Box<dyn Object>, Fail>> {
    Some(match typeid {
        dict::TYPEID => dict::make(args),
        list::TYPEID => list::make(args, false),
        list::ARRAY_TYPEID => list::make(args, true),
        namespace::TYPEID => namespace::make(args),
        namespace::VALUE_TYPEID => namespace::make_value(args),
        queue::TYPEID => queue::make(args, false),
        queue::JOINABLE_TYPEID => queue::make(args, true),
        sync::LOCK_TYPEID => Ok(Box::new(sync::LockObj::new(false)) as Box<dyn Object>),
        sync::RLOCK_TYPEID => Ok(Box::new(sync::LockObj::new(true)) as Box<dyn Object>),
        sync::SEMAPHORE_TYPEID => sync::make_semaphore(args, false),
        sync::BOUNDED_SEMAPHORE_TYPEID => sync::make_semaphore(args, true),
        sync::EVENT_TYPEID => Ok(Box::new(sync::EventObj::default()) as Box<dyn Object>),
        condition::TYPEID => condition::make(args, refs),
        barrier::TYPEID => barrier::make(args),
        _ => return None,
    })
}

// ------------------------------------------------------------ server side

/// Decodes a method's arguments.
pub(crate) fn args<T: DeserializeOwned>(b: &[u8]) -> std::result::Result<T, Fail> {
    codec::decode(b).map_err(|e| Fail::Remote(format!("bad arguments: {e}")))
}

/// Decodes a method's arguments in place: byte strings ([`RawRef`](super::wire::RawRef))
/// and strings borrow from the request.
pub(crate) fn args_in<'a, T: Deserialize<'a>>(b: &'a [u8]) -> std::result::Result<T, Fail> {
    codec::decode_borrowed(b)
        .map(|(v, _)| v)
        .map_err(|e| Fail::Remote(format!("bad arguments: {e}")))
}

/// Encodes a method's result.
pub(crate) fn ok<T: Serialize + ?Sized>(v: &T) -> std::result::Result<Out, Fail> {
    Out::encode(v, Vec::new())
}

/// Encodes a result that carries stored values (and their references).
pub(crate) fn ok_with<T: Serialize + ?Sized>(
    v: &T,
    refs: Vec<ObjRef>,
) -> std::result::Result<Out, Fail> {
    Out::encode(v, refs)
}

/// A builtin's own failure.
pub(crate) fn err(e: BuiltinError) -> Fail {
    match codec::encode(&e) {
        Ok(b) => Fail::Method(b),
        Err(e) => Fail::Remote(e.to_string()),
    }
}

pub(crate) fn unknown(typeid: &str, method: &str) -> Fail {
    Fail::Remote(format!("{typeid} has no method {method:?}"))
}

impl CallCx<'_> {
    /// Turns a received value (read in place) into a stored one, holding
    /// its references.
    pub(crate) fn store(&self, v: ValueRef<'_>) -> std::result::Result<Stored, Fail> {
        let refs = self.resolve(&v.refs).map_err(Fail::Remote)?;
        Ok(Stored {
            bytes: v.bytes.0.to_vec(),
            refs,
        })
    }
}

impl CallCx<'_> {
    /// Overwrites the stored value `slot` with the received `v` (read in
    /// place), in its own buffer; returns the references the old value
    /// held (to drop outside the container's lock).
    pub(crate) fn store_over(
        &self,
        slot: &mut Stored,
        v: ValueRef<'_>,
    ) -> std::result::Result<Vec<ObjRef>, Fail> {
        let refs = self.resolve(&v.refs).map_err(Fail::Remote)?;
        refill(&mut slot.bytes, v.bytes.0);
        Ok(std::mem::replace(&mut slot.refs, refs))
    }
}

/// Overwrites a stored value's buffer with `new`, reusing its memory unless
/// it is much larger than needed (a value that shrank should not pin it).
pub(crate) fn refill(buf: &mut Vec<u8>, new: &[u8]) {
    if buf.capacity() > 2 * new.len() + 64 {
        *buf = new.to_vec();
    } else {
        buf.clear();
        buf.extend_from_slice(new);
    }
}

/// A stored value going back: its bytes, encoded from where they are, and
/// its references added to `refs`.
pub(crate) fn give<'a>(s: &'a Stored, refs: &mut Vec<ObjRef>) -> RawRef<'a> {
    refs.extend(s.refs.iter().cloned());
    RawRef(&s.bytes)
}

/// A stored value leaving its container.
pub(crate) fn give_owned(s: Stored, refs: &mut Vec<ObjRef>) -> Raw {
    refs.extend(s.refs);
    Raw(s.bytes)
}

// ------------------------------------------------------------ proxy side

/// Encodes a user value for storing in the server, with the proxies it holds.
pub(crate) fn value_of<T: Serialize + ?Sized>(endpoint: &Endpoint, v: &T) -> Result<Value> {
    let mut bytes = Vec::new();
    let refs = encode_collecting(&endpoint.address, v, &mut bytes)?;
    Ok(Value {
        bytes: Raw(bytes),
        refs,
    })
}

/// Encodes `v` into `core`'s value buffer, with the proxies it holds, and
/// runs `f` (which makes the call) with it: no buffer of its own per call.
pub(crate) fn with_value<T: Serialize + ?Sized, R>(
    core: &ProxyCore,
    v: &T,
    f: impl FnOnce(ValueRef<'_>) -> Result<R>,
) -> Result<R> {
    core.with_value_bufs(|_, vb| {
        let refs = encode_collecting(&core.token().endpoint.address, v, vb)?;
        f(ValueRef {
            bytes: RawRef(vb),
            refs,
        })
    })
}

/// Decodes, in place, an answer that is one stored value.
pub(crate) fn decode_one<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    let (r, _) = codec::decode_borrowed::<RawRef<'_>>(b)?;
    codec::decode(r.0)
}

/// Decodes, in place, an answer that is a stored value or none.
pub(crate) fn decode_opt<T: DeserializeOwned>(b: &[u8]) -> Result<Option<T>> {
    let (r, _) = codec::decode_borrowed::<Option<RawRef<'_>>>(b)?;
    r.map(|r| codec::decode(r.0)).transpose()
}

/// Decodes, in place, an answer that is a list of stored values.
pub(crate) fn decode_all<T: DeserializeOwned>(b: &[u8]) -> Result<Vec<T>> {
    let (rs, _) = codec::decode_borrowed::<Vec<RawRef<'_>>>(b)?;
    rs.iter().map(|r| codec::decode(r.0)).collect()
}

/// Declares a builtin proxy type: the struct, `Clone` (a new connection),
/// `Debug`, serde (as a token) and [`Proxy`](super::Proxy). Extra fields
/// (`{ name: Type }`, per handle, never shared) start as `Default`.
macro_rules! builtin_proxy {
    ($(#[$m:meta])* $name:ident [$($g:ident),*] $typeid:literal $({ $($f:ident : $fty:ty),* })?) => {
        $(#[$m])*
        pub struct $name<$($g),*> {
            core: $crate::manager::ProxyCore,
            $($($f: $fty,)*)?
            _t: ::std::marker::PhantomData<fn() -> ($($g,)*)>,
        }

        impl<$($g),*> $name<$($g),*> {
            fn wrap(core: $crate::manager::ProxyCore) -> Self {
                Self { core, $($($f: <$fty>::default(),)*)? _t: ::std::marker::PhantomData }
            }

            /// A new handle with its own connection, or the error if the
            /// server cannot be reached ([`Clone`] defers that error to the
            /// first call).
            pub fn try_clone(&self) -> $crate::Result<Self> {
                Ok(Self::wrap(self.core.try_clone()?))
            }
        }

        impl<$($g),*> Clone for $name<$($g),*> {
            /// A new handle to the same object, with its own connection.
            fn clone(&self) -> Self {
                Self::wrap(self.core.clone())
            }
        }

        impl<$($g),*> ::std::fmt::Debug for $name<$($g),*> {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Debug::fmt(&self.core, f)
            }
        }

        impl<$($g),*> ::serde::Serialize for $name<$($g),*> {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> ::std::result::Result<S::Ok, S::Error> {
                ::serde::Serialize::serialize(&self.core, s)
            }
        }

        impl<'de, $($g),*> ::serde::Deserialize<'de> for $name<$($g),*> {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> ::std::result::Result<Self, D::Error> {
                let core = <$crate::manager::ProxyCore as ::serde::Deserialize>::deserialize(d)?;
                if core.typeid() != $typeid {
                    return Err(<D::Error as ::serde::de::Error>::custom(format!(
                        "expected a proxy to a {}, got one to a {}", $typeid, core.typeid()
                    )));
                }
                Ok(Self::wrap(core))
            }
        }

        impl<$($g),*> $crate::manager::Proxy for $name<$($g),*> {
            const TYPEID: &'static str = $typeid;
            fn from_core(core: $crate::manager::ProxyCore) -> Self {
                Self::wrap(core)
            }
            fn core(&self) -> &$crate::manager::ProxyCore {
                &self.core
            }
        }
    };
}
pub(crate) use builtin_proxy;
