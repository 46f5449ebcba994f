//! Which proxies a request carries: while a value bound for one server is
//! encoded, each proxy of that server met inside it is recorded, and its id
//! travels in the request's `refs`, so the server keeps its object alive
//! while the value is stored (see the [wire](super::wire) docs).

use super::token::{Token, WireAddr};
use super::wire::ObjId;
use crate::codec;
use crate::error::Result;
use serde::Serialize;
use std::cell::RefCell;

/// The proxies met while values bound for one server are encoded: one
/// frame per [`encode_collecting`] under way in this thread (they nest when
/// a value's own `Serialize` encodes another), the innermost last. Frames
/// stay allocated between encodes and keep their address, so encoding a
/// value that holds no proxy allocates nothing.
struct Collecting {
    depth: usize,
    frames: Vec<(WireAddr, Vec<ObjId>)>,
}

thread_local! {
    static COLLECT: RefCell<Collecting> = const {
        RefCell::new(Collecting { depth: 0, frames: Vec::new() })
    };
}

/// Closes the innermost collecting frame, also when encoding panics (a
/// frame left open would take a later proxy's encoding for a request's).
struct FrameGuard;

impl Drop for FrameGuard {
    fn drop(&mut self) {
        COLLECT.with(|c| {
            let mut c = c.borrow_mut();
            c.depth = c.depth.saturating_sub(1);
        });
    }
}

/// Encodes `value` into `out`, collecting the ids of proxies of the server
/// at `target` that it contains (they travel as `refs`).
pub(crate) fn encode_collecting<T: Serialize + ?Sized>(
    target: &WireAddr,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<Vec<ObjId>> {
    let depth = COLLECT.with(|c| {
        let mut c = c.borrow_mut();
        let depth = c.depth;
        match c.frames.get_mut(depth) {
            Some((addr, ids)) => {
                if addr != target {
                    *addr = target.clone();
                }
                ids.clear();
            }
            None => c.frames.push((target.clone(), Vec::new())),
        }
        c.depth = depth + 1;
        depth
    });
    let guard = FrameGuard;
    let res = codec::encode_into(value, out);
    let ids = COLLECT.with(|c| {
        let mut c = c.borrow_mut();
        c.frames.get_mut(depth).map(|f| std::mem::take(&mut f.1))
    });
    drop(guard);
    res?;
    Ok(ids.unwrap_or_default())
}

/// Records `token` for the request being encoded, if it belongs to the
/// request's server; `false` if no such request is being encoded.
pub(super) fn collect(token: &Token) -> bool {
    COLLECT.with(|c| {
        let mut c = c.borrow_mut();
        let Some(top) = c.depth.checked_sub(1) else {
            return false;
        };
        match c.frames.get_mut(top) {
            Some((addr, ids)) if *addr == token.endpoint.address => {
                ids.push(token.id);
                true
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::token::Endpoint;
    use super::*;
    use std::sync::Arc;

    fn token(port: u16, id: ObjId) -> Token {
        Token {
            endpoint: Arc::new(Endpoint {
                address: addr(port),
                authkey: Vec::new(),
            }),
            typeid: "dict".into(),
            id,
        }
    }

    fn addr(port: u16) -> WireAddr {
        WireAddr::Tcp(([127, 0, 0, 1], port).into())
    }

    /// Serializes as nothing; records the proxy `id` of the server at
    /// `port` (as a proxy's `Serialize` does), after encoding a value for
    /// another server holding `inner`.
    struct Nested {
        port: u16,
        id: ObjId,
        inner: Option<(u16, ObjId)>,
    }

    impl Serialize for Nested {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            if let Some((port, id)) = self.inner {
                let inner = Nested {
                    port,
                    id,
                    inner: None,
                };
                let got = encode_collecting(&addr(port), &inner, &mut Vec::new()).unwrap();
                assert_eq!(got, vec![id]);
                assert!(!collect(&token(port, 99)), "another server's proxy");
            }
            assert!(collect(&token(self.port, self.id)));
            s.serialize_unit()
        }
    }

    #[test]
    fn each_request_gets_the_proxies_of_its_own_server() {
        assert!(!collect(&token(1, 5)), "no request is being encoded");
        let value = Nested {
            port: 1,
            id: 5,
            inner: Some((2, 6)),
        };
        assert_eq!(
            encode_collecting(&addr(1), &value, &mut Vec::new()).unwrap(),
            vec![5]
        );
        // Again, with the frames kept from the first time.
        let got = encode_collecting(&addr(2), &(), &mut Vec::new()).unwrap();
        assert!(got.is_empty());
        assert!(!collect(&token(1, 5)));
    }

    #[test]
    fn a_panic_while_encoding_leaves_no_request_open() {
        struct Boom;
        impl Serialize for Boom {
            fn serialize<S: serde::Serializer>(
                &self,
                _: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                panic!("boom")
            }
        }
        let r = std::panic::catch_unwind(|| encode_collecting(&addr(1), &Boom, &mut Vec::new()));
        assert!(r.is_err());
        // A proxy encoded now (into process arguments, say) is not taken
        // for a request's.
        assert!(!collect(&token(1, 5)));
    }
}
