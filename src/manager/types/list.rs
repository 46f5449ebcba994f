//! `list` and `Array`: shared sequences (Python's `Manager().list()` and
//! `Manager().Array()`), with `Vec`-like methods on the proxy.

use super::{
    args, args_in, builtin_proxy, decode_all, decode_one, decode_opt, err, give, give_owned, ok,
    ok_with, unknown, value_of, with_value,
};
use crate::error::Result;
use crate::manager::fault::BuiltinError;
use crate::manager::registry::{CallCx, Fail, Object, Out, Stored};
use crate::manager::wire::{Raw, RawRef, ValueRef};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Mutex;

pub(crate) const TYPEID: &str = "list";
pub(crate) const ARRAY_TYPEID: &str = "Array";

pub(crate) struct ListObj {
    items: Mutex<Vec<Stored>>,
    /// An `Array`: fixed length, no push/pop/insert/remove.
    fixed: bool,
}

pub(crate) fn make(a: &[u8], fixed: bool) -> std::result::Result<Box<dyn Object>, Fail> {
    // The initial items arrive as plain values (proxies inside an initial
    // list are not supported: fill it with `push` instead).
    let init: Vec<Raw> = args(a)?;
    Ok(Box::new(ListObj {
        items: Mutex::new(
            init.into_iter()
                .map(|r| Stored {
                    bytes: r.0,
                    refs: Vec::new(),
                })
                .collect(),
        ),
        fixed,
    }))
}

fn index_error(i: u64, len: usize) -> Fail {
    err(BuiltinError::Invalid(format!(
        "index {i} out of range for length {len}"
    )))
}

impl Object for ListObj {
    fn call(&self, cx: &mut CallCx<'_>, method: &str, a: &[u8]) -> std::result::Result<Out, Fail> {
        let typeid = if self.fixed { ARRAY_TYPEID } else { TYPEID };
        let mut v = self.items.lock().unwrap_or_else(|e| e.into_inner());
        let mut refs = Vec::new();
        match (method, self.fixed) {
            ("len", _) => ok(&(v.len() as u64)),
            ("get", _) => {
                let i: u64 = args(a)?;
                let r = v.get(i as usize).map(|s| give(s, &mut refs));
                ok_with(&r, refs)
            }
            ("set", _) => {
                let (i, val): (u64, ValueRef<'_>) = args_in(a)?;
                let len = v.len();
                let slot = v.get_mut(i as usize).ok_or_else(|| index_error(i, len))?;
                let old = cx.store_over(slot, val)?;
                drop(v);
                drop(old);
                ok(&())
            }
            ("to_vec", _) => {
                let all: Vec<RawRef<'_>> = v.iter().map(|s| give(s, &mut refs)).collect();
                ok_with(&all, refs)
            }
            ("push", false) => {
                let val: ValueRef<'_> = args_in(a)?;
                v.push(cx.store(val)?);
                ok(&())
            }
            ("pop", false) => {
                let r = v.pop();
                drop(v);
                let r = r.map(|s| give_owned(s, &mut refs));
                ok_with(&r, refs)
            }
            ("extend", false) => {
                let vals: Vec<ValueRef<'_>> = args_in(a)?;
                let mut stored = Vec::with_capacity(vals.len());
                for val in vals {
                    stored.push(cx.store(val)?);
                }
                v.extend(stored);
                ok(&())
            }
            ("insert", false) => {
                let (i, val): (u64, ValueRef<'_>) = args_in(a)?;
                if i as usize > v.len() {
                    return Err(index_error(i, v.len()));
                }
                let s = cx.store(val)?;
                v.insert(i as usize, s);
                ok(&())
            }
            ("remove", false) => {
                let i: u64 = args(a)?;
                if i as usize >= v.len() {
                    return Err(index_error(i, v.len()));
                }
                let s = v.remove(i as usize);
                drop(v);
                let r = give_owned(s, &mut refs);
                ok_with(&r, refs)
            }
            ("clear", false) => {
                let old = std::mem::take(&mut *v);
                drop(v);
                drop(old);
                ok(&())
            }
            _ => Err(unknown(typeid, method)),
        }
    }
}

builtin_proxy! {
    /// A proxy to a shared list (Python's `ListProxy`, from
    /// [`Manager::list`](crate::manager::Manager::list)), with `Vec`-like
    /// methods that run in the server.
    ///
    /// ```
    /// # multiproc::init();
    /// let manager = multiproc::manager::Manager::start()?;
    /// let l = manager.list::<u32>()?;
    /// l.push(1)?;
    /// l.extend([2, 3])?;
    /// assert_eq!(l.len()?, 3);
    /// assert_eq!(l.pop()?, Some(3));
    /// assert_eq!(l.to_vec()?, vec![1, 2]);
    /// assert!(l.set(7, 0).is_err()); // Python's IndexError
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ListProxy[T] "list"
}

builtin_proxy! {
    /// A proxy to a shared fixed-length array (Python's `Manager().Array()`):
    /// `len`, `get`, `set`, `to_vec`. Items are any serde type (Python's
    /// typecode is the Rust type).
    ///
    /// ```
    /// # multiproc::init();
    /// let manager = multiproc::manager::Manager::start()?;
    /// let a = manager.array(vec![0i64; 4])?;
    /// a.set(2, 7)?;
    /// assert_eq!(a.to_vec()?, vec![0, 0, 7, 0]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "Array")]
    ArrayProxy[T] "Array"
}

macro_rules! indexed_methods {
    ($name:ident) => {
        impl<T: Serialize + DeserializeOwned> $name<T> {
            /// The number of items (Python's `len(l)`).
            #[doc(alias = "__len__")]
            pub fn len(&self) -> Result<usize> {
                Ok(self.core.call::<_, u64>("len", &())? as usize)
            }

            /// `true` when empty.
            pub fn is_empty(&self) -> Result<bool> {
                Ok(self.len()? == 0)
            }

            /// `l[i]`, or `None` past the end.
            #[doc(alias = "__getitem__")]
            pub fn get(&self, i: usize) -> Result<Option<T>> {
                self.core.call_with("get", &(i as u64), decode_opt)
            }

            /// `l[i] = v`.
            ///
            /// # Errors
            ///
            /// [`Error::Invalid`](crate::Error::Invalid) if `i` is out of
            /// range (Python's `IndexError`).
            #[doc(alias = "__setitem__")]
            pub fn set(&self, i: usize, v: T) -> Result<()> {
                with_value(&self.core, &v, |value| {
                    self.core.call("set", &(i as u64, value))
                })
            }

            /// A snapshot of every item (Python's `l[:]`).
            pub fn to_vec(&self) -> Result<Vec<T>> {
                self.core.call_with("to_vec", &(), decode_all)
            }

            /// Iterates over a snapshot taken in one call (Python's
            /// `iter(l)`, which also fetches the items at once): later
            /// changes by others are not seen.
            #[doc(alias = "__iter__")]
            pub fn iter(&self) -> Result<std::vec::IntoIter<T>> {
                Ok(self.to_vec()?.into_iter())
            }
        }
    };
}
indexed_methods!(ListProxy);
indexed_methods!(ArrayProxy);

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// Appends `v` (Python's `append`).
    #[doc(alias = "append")]
    pub fn push(&self, v: T) -> Result<()> {
        with_value(&self.core, &v, |value| self.core.call("push", &value))
    }

    /// Removes and returns the last item.
    pub fn pop(&self) -> Result<Option<T>> {
        self.core.call_with("pop", &(), decode_opt)
    }

    /// Appends every item, in one call.
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let endpoint = &self.core.token().endpoint;
        let vals = items
            .into_iter()
            .map(|v| value_of(endpoint, &v))
            .collect::<Result<Vec<_>>>()?;
        self.core.call("extend", &vals)
    }

    /// Inserts `v` before index `i` (`i == len` appends).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`](crate::Error::Invalid) if `i > len`.
    pub fn insert(&self, i: usize, v: T) -> Result<()> {
        with_value(&self.core, &v, |value| {
            self.core.call("insert", &(i as u64, value))
        })
    }

    /// Removes and returns the item at `i` (Python's `l.pop(i)`).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`](crate::Error::Invalid) if `i` is out of range.
    pub fn remove(&self, i: usize) -> Result<T> {
        self.core.call_with("remove", &(i as u64), decode_one)
    }

    /// Removes every item.
    pub fn clear(&self) -> Result<()> {
        self.core.call("clear", &())
    }
}
