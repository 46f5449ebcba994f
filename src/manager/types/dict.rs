//! `dict`: a shared map (Python's `Manager().dict()`), with
//! `HashMap`-like methods on the proxy.

use super::{
    args, args_in, builtin_proxy, decode_all, decode_opt, give, give_owned, ok, ok_with, refill,
    unknown, value_of,
};
use crate::codec;
use crate::error::Result;
use crate::manager::collect::encode_collecting;
use crate::manager::registry::{CallCx, Fail, Object, Out, Stored};
use crate::manager::wire::{Raw, RawRef, ValueRef};
use crate::manager::Proxy;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

pub(crate) const TYPEID: &str = "dict";

/// Keys compare by their encoded bytes; iteration follows insertion order,
/// as Python's dict does.
#[derive(Default)]
struct Map {
    entries: HashMap<Vec<u8>, (u64, Stored)>,
    order: BTreeMap<u64, Vec<u8>>,
    next: u64,
}

impl Map {
    fn insert(&mut self, k: &[u8], v: Stored) -> Option<Stored> {
        if let Some((_, old)) = self.entries.get_mut(k) {
            return Some(std::mem::replace(old, v));
        }
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, k.to_vec());
        self.entries.insert(k.to_vec(), (seq, v));
        None
    }

    fn remove(&mut self, k: &[u8]) -> Option<Stored> {
        let (seq, v) = self.entries.remove(k)?;
        self.order.remove(&seq);
        Some(v)
    }

    fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Stored)> {
        self.order
            .values()
            .filter_map(|k| self.entries.get(k).map(|(_, v)| (k, v)))
    }
}

pub(crate) struct DictObj {
    map: Mutex<Map>,
}

pub(crate) fn make(a: &[u8]) -> std::result::Result<Box<dyn Object>, Fail> {
    let _: () = args(a)?;
    Ok(Box::new(DictObj {
        map: Mutex::new(Map::default()),
    }))
}

impl Object for DictObj {
    fn call(&self, cx: &mut CallCx<'_>, method: &str, a: &[u8]) -> std::result::Result<Out, Fail> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut refs = Vec::new();
        match method {
            "insert" => {
                // Read in place from the request: only a new entry, or a
                // value the old one's buffer does not suit, takes new memory.
                let (k, v): (RawRef<'_>, ValueRef<'_>) = args_in(a)?;
                let new_refs = cx.resolve(&v.refs).map_err(Fail::Remote)?;
                match m.entries.get_mut(k.0) {
                    Some((_, old)) => {
                        // The old value goes back (encoded first); its buffer
                        // takes the new one.
                        let out = Out::encode(&Some(RawRef(&old.bytes)), Vec::new())?;
                        refill(&mut old.bytes, v.bytes.0);
                        let old_refs = std::mem::replace(&mut old.refs, new_refs);
                        drop(m);
                        Ok(Out {
                            refs: old_refs,
                            ..out
                        })
                    }
                    None => {
                        let v = Stored {
                            bytes: v.bytes.0.to_vec(),
                            refs: new_refs,
                        };
                        m.insert(k.0, v);
                        drop(m);
                        ok(&None::<RawRef<'_>>)
                    }
                }
            }
            "get" => {
                let k: RawRef<'_> = args_in(a)?;
                match m.entries.get(k.0) {
                    // Encoded from where it is stored, under the lock.
                    Some((_, v)) => Out::encode(&Some(RawRef(&v.bytes)), v.refs.clone()),
                    None => ok(&None::<RawRef<'_>>),
                }
            }
            "remove" => {
                let k: RawRef<'_> = args_in(a)?;
                let v = m.remove(k.0);
                drop(m);
                let v = v.map(|o| give_owned(o, &mut refs));
                ok_with(&v, refs)
            }
            "len" => ok(&(m.entries.len() as u64)),
            "contains_key" => {
                let k: RawRef<'_> = args_in(a)?;
                ok(&m.entries.contains_key(k.0))
            }
            "keys" => {
                let keys: Vec<RawRef<'_>> = m.iter().map(|(k, _)| RawRef(k)).collect();
                ok(&keys)
            }
            "values" => {
                let vals: Vec<RawRef<'_>> = m.iter().map(|(_, v)| give(v, &mut refs)).collect();
                ok_with(&vals, refs)
            }
            "items" => {
                let items: Vec<(RawRef<'_>, RawRef<'_>)> = m
                    .iter()
                    .map(|(k, v)| (RawRef(k), give(v, &mut refs)))
                    .collect();
                ok_with(&items, refs)
            }
            "update" => {
                let items: Vec<(RawRef<'_>, ValueRef<'_>)> = args_in(a)?;
                let mut stored = Vec::with_capacity(items.len());
                for (k, v) in items {
                    stored.push((k, cx.store(v)?));
                }
                let mut old = Vec::new();
                for (k, v) in stored {
                    old.extend(m.insert(k.0, v));
                }
                drop(m);
                drop(old);
                ok(&())
            }
            "clear" => {
                let old = std::mem::take(&mut *m);
                drop(m);
                drop(old);
                ok(&())
            }
            _ => Err(unknown(TYPEID, method)),
        }
    }
}

builtin_proxy! {
    /// A proxy to a shared dict (Python's `DictProxy`, from
    /// [`Manager::dict`](crate::manager::Manager::dict)): a map living in the
    /// manager's server, with `HashMap`-like methods that run there.
    ///
    /// Keys are compared by their encoded bytes (equal for equal values of
    /// the usual key types: integers, strings, tuples and enums of them);
    /// [`keys`](Self::keys), [`values`](Self::values) and
    /// [`items`](Self::items) return snapshots in insertion order, as Python
    /// does. A value may hold proxies: they stay alive while stored and come
    /// back as working proxies.
    ///
    /// ```
    /// # multiproc::init();
    /// let manager = multiproc::manager::Manager::start()?;
    /// let d = manager.dict::<String, u32>()?;
    /// assert_eq!(d.insert("a".into(), 1)?, None);
    /// assert_eq!(d.insert("a".into(), 2)?, Some(1));
    /// assert_eq!(d.get(&"a".into())?, Some(2));
    /// assert_eq!(d.len()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    DictProxy[K, V] "dict"
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    fn key(k: &K) -> Result<Raw> {
        Ok(Raw(codec::encode(k)?))
    }

    /// Calls `method` with the key `k` (encoded into the proxy's buffer)
    /// and decodes the answer with `f`.
    fn with_key<R>(&self, method: &str, k: &K, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        self.core.with_value_bufs(|kb, _| {
            codec::encode_into(k, kb)?;
            self.core.call_with(method, &RawRef(kb), f)
        })
    }

    /// Sets `d[k] = v`; returns the previous value.
    #[doc(alias = "__setitem__")]
    pub fn insert(&self, k: K, v: V) -> Result<Option<V>> {
        let core = &self.core;
        core.with_value_bufs(|kb, vb| {
            codec::encode_into(&k, kb)?;
            let refs = encode_collecting(&core.token().endpoint.address, &v, vb)?;
            let value = ValueRef {
                bytes: RawRef(vb),
                refs,
            };
            core.call_with("insert", &(RawRef(kb), value), decode_opt)
        })
    }

    /// `d[k]`, or `None` (Python's `d.get(k)`).
    #[doc(alias = "__getitem__")]
    pub fn get(&self, k: &K) -> Result<Option<V>> {
        self.with_key("get", k, decode_opt)
    }

    /// Removes `k`, returning its value (Python's `d.pop(k, None)`).
    #[doc(alias = "pop")]
    #[doc(alias = "__delitem__")]
    pub fn remove(&self, k: &K) -> Result<Option<V>> {
        self.with_key("remove", k, decode_opt)
    }

    /// The number of entries (Python's `len(d)`).
    #[doc(alias = "__len__")]
    pub fn len(&self) -> Result<usize> {
        Ok(self.core.call::<_, u64>("len", &())? as usize)
    }

    /// `true` when empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// `k in d`.
    #[doc(alias = "__contains__")]
    pub fn contains_key(&self, k: &K) -> Result<bool> {
        self.with_key("contains_key", k, codec::decode)
    }

    /// A snapshot of the keys, in insertion order.
    pub fn keys(&self) -> Result<Vec<K>> {
        self.core.call_with("keys", &(), decode_all)
    }

    /// A snapshot of the values, in insertion order.
    pub fn values(&self) -> Result<Vec<V>> {
        self.core.call_with("values", &(), decode_all)
    }

    /// A snapshot of the entries, in insertion order.
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        self.core.call_with("items", &(), |b| {
            let (vs, _) = codec::decode_borrowed::<Vec<(RawRef<'_>, RawRef<'_>)>>(b)?;
            vs.iter()
                .map(|(k, v)| Ok((codec::decode(k.0)?, codec::decode(v.0)?)))
                .collect()
        })
    }

    /// Inserts every pair (Python's `d.update(...)`), in one call.
    pub fn update(&self, items: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let endpoint = &self.core.token().endpoint;
        let items = items
            .into_iter()
            .map(|(k, v)| Ok((Self::key(&k)?, value_of(endpoint, &v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.core.call("update", &items)
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        self.core.call("clear", &())
    }

    /// A snapshot as a local `HashMap` (Python's `d.copy()`).
    #[doc(alias = "copy")]
    pub fn to_map(&self) -> Result<std::collections::HashMap<K, V>>
    where
        K: std::hash::Hash + Eq,
    {
        Ok(self.items()?.into_iter().collect())
    }
}

impl<K, V> DictProxy<K, V> {
    /// The untyped proxy.
    pub fn proxy(&self) -> &crate::manager::ProxyCore {
        Proxy::core(self)
    }
}
