//! The request/response protocol between proxies and the server.
//!
//! Every message is one frame of the crate's [`Connection`](crate::Connection)
//! encoded with the [codec](crate::codec). A request is a [`Request`] header,
//! and for a call the method's arguments follow in the same frame, encoded
//! by the proxy; the server decodes the header, then hands the remaining
//! bytes to the object, which decodes them as the types it expects. A reply
//! is one [`Reply`].
//!
//! A method may send descriptors to its caller (`SCM_RIGHTS`, over a Unix
//! socket only) ahead of its answer: each in a frame of its own whose bytes
//! are [`FD_FRAME`]; the proxy that asked takes them, then the [`Reply`]. A
//! queue's `share` does (see `types/queue.rs`); no other method sends any,
//! and a proxy's other receives close whatever descriptor arrives.
//!
//! Values a container stores (a dict's keys and values, a queue's items)
//! are opaque byte strings to the server: they are encoded by the proxy with
//! their Rust types and decoded by the proxy that reads them. When such a
//! value holds proxies, the request lists their object ids in `refs`, so the
//! server keeps those objects alive as long as the value is stored.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The bytes of a frame that only carries a descriptor for the answer
/// that follows (see the module docs). Its first byte is not the start of
/// any [`Reply`].
pub(crate) const FD_FRAME: &[u8] = b"\xffmultiproc-manager-fd";

/// A server-wide object identifier.
pub(crate) type ObjId = u64;

/// An opaque byte string, encoded as one serde byte array (not a sequence).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct Raw(pub(crate) Vec<u8>);

impl fmt::Debug for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Raw({} bytes)", self.0.len())
    }
}

impl Serialize for Raw {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Raw, E> {
                Ok(Raw(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Raw, E> {
                Ok(Raw(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// A borrowed [`Raw`], encoded the same way: a request's or reply's bytes
/// read in place from the received frame, or written from where they lie.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawRef<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for RawRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawRef({} bytes)", self.0.len())
    }
}

impl Serialize for RawRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawRef<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawRef<'a>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawRef<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string borrowed from the input")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                v: &'de [u8],
            ) -> Result<RawRef<'de>, E> {
                Ok(RawRef(v))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// A stored value: its encoded bytes and the objects it refers to (proxies
/// inside it), as sent by a proxy or handed back to one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Value {
    pub(crate) bytes: Raw,
    pub(crate) refs: Vec<ObjId>,
}

/// A [`Value`] whose bytes are borrowed, encoded the same way.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ValueRef<'a> {
    #[serde(borrow)]
    pub(crate) bytes: RawRef<'a>,
    pub(crate) refs: Vec<ObjId>,
}

/// The first thing a new connection sends after the handshake.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request<'a> {
    /// Create an object of `typeid` from the encoded arguments that follow;
    /// this connection holds the new object. Replies with its id.
    Create {
        /// The registered type name.
        typeid: &'a str,
        /// Objects the arguments refer to.
        refs: Vec<ObjId>,
    },
    /// Take a reference to an existing object for this connection: claims a
    /// reference left pending for a proxy in transit, else adds one if the
    /// object still exists. Replies with its type name.
    Attach {
        /// The object.
        id: ObjId,
    },
    /// Call `method` on an object this connection holds, with the encoded
    /// arguments that follow.
    Call {
        /// The object.
        id: ObjId,
        /// The method name.
        method: &'a str,
        /// Objects the arguments refer to.
        refs: Vec<ObjId>,
    },
    /// Leave one reference to `id` pending for a proxy in transit (a proxy
    /// serialized into process arguments or a message); it lasts until a
    /// connection claims it with `Attach` or this connection closes.
    Pending {
        /// The object.
        id: ObjId,
    },
    /// Look up an object published under `name`; this connection holds it.
    /// Replies with `(id, typeid)`.
    Lookup {
        /// The published name.
        name: &'a str,
    },
    /// Publish an object this connection holds under `name` for the
    /// server's lifetime (CPython's registered shared objects).
    Publish {
        /// The name.
        name: &'a str,
        /// The object.
        id: ObjId,
    },
    /// How many objects are alive (a diagnostic, CPython's `_number_of_objects`).
    NumberOfObjects,
    /// Stop the server (CPython's `shutdown`).
    Shutdown,
    /// [`Call`](Self::Call) without an answer unless it fails (a pipelined
    /// call, such as a put on an unbounded queue). After a failed `Post` the
    /// server makes no later `Post` of this connection and answers its next
    /// other request with [`Reply::Deferred`] instead of carrying it out.
    Post {
        /// The object.
        id: ObjId,
        /// The method name.
        method: &'a str,
        /// Objects the arguments refer to.
        refs: Vec<ObjId>,
    },
    /// Answers `Ok(())` once every earlier request of this connection has
    /// been carried out (or [`Reply::Deferred`]).
    Sync,
    /// Move this connection's requests and answers to a pair of pipes (see
    /// `link.rs`): over a Unix socket, when the serving thread too may run
    /// only on `cpu`, the server sends the client's read end, then its write
    /// end, as descriptor frames, then answers `Ok` on the socket; any other
    /// answer leaves the connection on the socket.
    Pipes {
        /// The one CPU the client may run on.
        cpu: u32,
    },
}

/// The answer to one request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// Success: the encoded result, and the objects it refers to (each left
    /// pending for the caller, to be claimed by the proxies it decodes to).
    Ok(Value),
    /// The method returned `Err(e)`: the encoded `e` (CPython re-raises the
    /// referent's own exception).
    MethodError(Raw),
    /// The server could not carry out the call (CPython's `RemoteError`):
    /// a panic in the method, an unknown method or object, bad arguments.
    Remote(String),
    /// An earlier [`Request::Post`] of this connection failed, with this
    /// message: neither it, nor the posts after it, nor the request this
    /// answers were carried out.
    Deferred(String),
}

/// A [`Reply`] read in place from the received frame (same encoding, same
/// variants in the same order): a proxy decodes its answer from it without
/// copying the result out first.
#[derive(Debug, Deserialize)]
pub(crate) enum ReplyRef<'a> {
    /// [`Reply::Ok`].
    Ok(#[serde(borrow)] ValueRef<'a>),
    /// [`Reply::MethodError`].
    MethodError(#[serde(borrow)] RawRef<'a>),
    /// [`Reply::Remote`].
    Remote(String),
    /// [`Reply::Deferred`].
    Deferred(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    fn borrowed_forms_encode_as_the_owned_ones() {
        let bytes = vec![0u8, 1, 2, 250, 255];
        let owned = Value {
            bytes: Raw(bytes.clone()),
            refs: vec![3, 1 << 40],
        };
        let borrowed = ValueRef {
            bytes: RawRef(&bytes),
            refs: vec![3, 1 << 40],
        };
        let enc = codec::encode(&owned).unwrap();
        assert_eq!(codec::encode(&borrowed).unwrap(), enc);
        let (back, rest) = codec::decode_borrowed::<ValueRef<'_>>(&enc).unwrap();
        assert!(rest.is_empty());
        assert_eq!(back, borrowed);
        assert_eq!(
            codec::encode(&Some(RawRef(&bytes))).unwrap(),
            codec::encode(&Some(Raw(bytes.clone()))).unwrap()
        );
    }

    #[test]
    fn every_reply_reads_in_place_as_it_was_sent() {
        let replies = [
            Reply::Ok(Value {
                bytes: Raw(b"result".to_vec()),
                refs: vec![7],
            }),
            Reply::MethodError(Raw(b"err".to_vec())),
            Reply::Remote("remote".into()),
            Reply::Deferred("deferred".into()),
        ];
        for r in replies {
            let enc = codec::encode(&r).unwrap();
            let (got, _) = codec::decode_borrowed::<ReplyRef<'_>>(&enc).unwrap();
            match (&r, got) {
                (Reply::Ok(v), ReplyRef::Ok(g)) => {
                    assert_eq!(g.bytes.0, &v.bytes.0[..]);
                    assert_eq!(g.refs, v.refs);
                }
                (Reply::MethodError(b), ReplyRef::MethodError(g)) => assert_eq!(g.0, &b.0[..]),
                (Reply::Remote(a), ReplyRef::Remote(b)) => assert_eq!(*a, b),
                (Reply::Deferred(a), ReplyRef::Deferred(b)) => assert_eq!(*a, b),
                (a, b) => panic!("{a:?} read back as {b:?}"),
            }
        }
    }

    #[test]
    fn a_truncated_or_overlong_byte_string_does_not_read() {
        let enc = codec::encode(&ValueRef {
            bytes: RawRef(b"abcdef"),
            refs: vec![],
        })
        .unwrap();
        for cut in 0..enc.len() {
            assert!(codec::decode_borrowed::<ValueRef<'_>>(&enc[..cut]).is_err());
        }
        // A length far past the input.
        assert!(codec::decode_borrowed::<RawRef<'_>>(&[0xff, 0xff, 0xff, 0x7f, 1]).is_err());
    }
}
