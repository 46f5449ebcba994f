//! `dict`: a shared map (Python's `Manager().dict()`), with
//! `HashMap`-like methods on the proxy.

use super::{args, builtin_proxy, decode_raw, give, give_owned, ok, ok_with, unknown, value_of};
use crate::error::Result;
use crate::manager::registry::{CallCx, Fail, Object, Out, Stored};
use crate::manager::wire::{Raw, Value};
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
    fn insert(&mut self, k: Vec<u8>, v: Stored) -> Option<Stored> {
        if let Some((_, old)) = self.entries.get_mut(&k) {
            return Some(std::mem::replace(old, v));
        }
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, k.clone());
        self.entries.insert(k, (seq, v));
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
                let (k, v): (Raw, Value) = args(a)?;
                let v = cx.store(v)?;
                let old = m.insert(k.0, v);
                drop(m);
                let old = old.map(|o| give_owned(o, &mut refs));
                ok_with(&old, refs)
            }
            "get" => {
                let k: Raw = args(a)?;
                let v = m.entries.get(&k.0).map(|(_, v)| give(v, &mut refs));
                ok_with(&v, refs)
            }
            "remove" => {
                let k: Raw = args(a)?;
                let v = m.remove(&k.0);
                drop(m);
                let v = v.map(|o| give_owned(o, &mut refs));
                ok_with(&v, refs)
            }
            "len" => ok(&(m.entries.len() as u64)),
            "contains_key" => {
                let k: Raw = args(a)?;
                ok(&m.entries.contains_key(&k.0))
            }
            "keys" => {
                let keys: Vec<Raw> = m.iter().map(|(k, _)| Raw(k.clone())).collect();
                ok(&keys)
            }
            "values" => {
                let vals: Vec<Raw> = m
                    .iter()
                    .map(|(_, v)| {
                        refs.extend(v.refs.iter().cloned());
                        Raw(v.bytes.clone())
                    })
                    .collect();
                ok_with(&vals, refs)
            }
            "items" => {
                let items: Vec<(Raw, Raw)> = m
                    .iter()
                    .map(|(k, v)| {
                        refs.extend(v.refs.iter().cloned());
                        (Raw(k.clone()), Raw(v.bytes.clone()))
                    })
                    .collect();
                ok_with(&items, refs)
            }
            "update" => {
                let items: Vec<(Raw, Value)> = args(a)?;
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
        Ok(Raw(crate::codec::encode(k)?))
    }

    fn opt(r: Option<Raw>) -> Result<Option<V>> {
        r.as_ref().map(decode_raw).transpose()
    }

    /// Sets `d[k] = v`; returns the previous value.
    #[doc(alias = "__setitem__")]
    pub fn insert(&self, k: K, v: V) -> Result<Option<V>> {
        let value = value_of(&self.core.token().endpoint, &v)?;
        let old: Option<Raw> = self.core.call("insert", &(Self::key(&k)?, value))?;
        Self::opt(old)
    }

    /// `d[k]`, or `None` (Python's `d.get(k)`).
    #[doc(alias = "__getitem__")]
    pub fn get(&self, k: &K) -> Result<Option<V>> {
        let v: Option<Raw> = self.core.call("get", &Self::key(k)?)?;
        Self::opt(v)
    }

    /// Removes `k`, returning its value (Python's `d.pop(k, None)`).
    #[doc(alias = "pop")]
    #[doc(alias = "__delitem__")]
    pub fn remove(&self, k: &K) -> Result<Option<V>> {
        let v: Option<Raw> = self.core.call("remove", &Self::key(k)?)?;
        Self::opt(v)
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
        self.core.call("contains_key", &Self::key(k)?)
    }

    /// A snapshot of the keys, in insertion order.
    pub fn keys(&self) -> Result<Vec<K>> {
        let ks: Vec<Raw> = self.core.call("keys", &())?;
        ks.iter().map(decode_raw).collect()
    }

    /// A snapshot of the values, in insertion order.
    pub fn values(&self) -> Result<Vec<V>> {
        let vs: Vec<Raw> = self.core.call("values", &())?;
        vs.iter().map(decode_raw).collect()
    }

    /// A snapshot of the entries, in insertion order.
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        let vs: Vec<(Raw, Raw)> = self.core.call("items", &())?;
        vs.iter()
            .map(|(k, v)| Ok((decode_raw(k)?, decode_raw(v)?)))
            .collect()
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
