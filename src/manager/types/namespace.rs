//! `Namespace` (attributes by name) and `Value` (one shared cell):
//! Python's `Manager().Namespace()` and `Manager().Value()`.

use super::{
    args, args_in, builtin_proxy, decode_one, decode_opt, give, ok, ok_with, unknown, with_value,
};
use crate::error::Result;
use crate::manager::registry::{CallCx, Fail, Object, Out, Stored};
use crate::manager::wire::{Raw, ValueRef};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

pub(crate) const TYPEID: &str = "Namespace";
pub(crate) const VALUE_TYPEID: &str = "Value";

pub(crate) struct NamespaceObj {
    attrs: Mutex<BTreeMap<String, Stored>>,
}

pub(crate) fn make(a: &[u8]) -> std::result::Result<Box<dyn Object>, Fail> {
    let _: () = args(a)?;
    Ok(Box::new(NamespaceObj {
        attrs: Mutex::new(BTreeMap::new()),
    }))
}

impl Object for NamespaceObj {
    fn call(&self, cx: &mut CallCx<'_>, method: &str, a: &[u8]) -> std::result::Result<Out, Fail> {
        let mut m = self.attrs.lock().unwrap_or_else(|e| e.into_inner());
        let mut refs = Vec::new();
        match method {
            "get" => {
                let name: &str = args_in(a)?;
                let v = m.get(name).map(|s| give(s, &mut refs));
                ok_with(&v, refs)
            }
            "set" => {
                let (name, v): (&str, ValueRef<'_>) = args_in(a)?;
                let old = match m.get_mut(name) {
                    Some(slot) => cx.store_over(slot, v)?,
                    None => {
                        m.insert(name.to_string(), cx.store(v)?);
                        Vec::new()
                    }
                };
                drop(m);
                drop(old);
                ok(&())
            }
            "remove" => {
                let name: &str = args_in(a)?;
                let old = m.remove(name);
                drop(m);
                ok(&old.is_some())
            }
            "names" => ok(&m.keys().cloned().collect::<Vec<String>>()),
            _ => Err(unknown(TYPEID, method)),
        }
    }
}

builtin_proxy! {
    /// A proxy to a shared namespace (Python's `NamespaceProxy`, from
    /// [`Manager::namespace`](crate::manager::Manager::namespace)):
    /// attributes set and read by name, each with its own type.
    ///
    /// ```
    /// # multiproc::init();
    /// let manager = multiproc::manager::Manager::start()?;
    /// let ns = manager.namespace()?;
    /// ns.set("x", &10u32)?;
    /// ns.set("name", "hello")?;
    /// assert_eq!(ns.get::<u32>("x")?, Some(10));
    /// assert_eq!(ns.get::<String>("name")?.as_deref(), Some("hello"));
    /// assert_eq!(ns.get::<u32>("missing")?, None); // Python's AttributeError
    /// assert_eq!(ns.names()?, vec!["name".to_string(), "x".to_string()]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    NamespaceProxy[] "Namespace"
}

impl NamespaceProxy {
    /// Sets attribute `name` (Python's `ns.name = v`).
    #[doc(alias = "__setattr__")]
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, v: &T) -> Result<()> {
        with_value(&self.core, v, |value| self.core.call("set", &(name, value)))
    }

    /// Attribute `name` decoded as a `T`, or `None` if it is not set.
    ///
    /// Read it with the type it was set with: the codec is not
    /// self-describing, so another type may fail with
    /// [`Error::Codec`](crate::Error::Codec) or decode to garbage.
    #[doc(alias = "__getattr__")]
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        self.core.call_with("get", &name, decode_opt)
    }

    /// Removes attribute `name`; `true` if it was set (Python's `del ns.name`).
    #[doc(alias = "__delattr__")]
    pub fn remove(&self, name: &str) -> Result<bool> {
        self.core.call("remove", &name)
    }

    /// The attribute names, sorted.
    pub fn names(&self) -> Result<Vec<String>> {
        self.core.call("names", &())
    }
}

pub(crate) struct ValueObj {
    cell: Mutex<Stored>,
}

pub(crate) fn make_value(a: &[u8]) -> std::result::Result<Box<dyn Object>, Fail> {
    let init: Raw = args(a)?;
    Ok(Box::new(ValueObj {
        cell: Mutex::new(Stored {
            bytes: init.0,
            refs: Vec::new(),
        }),
    }))
}

impl Object for ValueObj {
    fn call(&self, cx: &mut CallCx<'_>, method: &str, a: &[u8]) -> std::result::Result<Out, Fail> {
        let mut c = self.cell.lock().unwrap_or_else(|e| e.into_inner());
        let mut refs = Vec::new();
        match method {
            "get" => {
                let r = give(&c, &mut refs);
                ok_with(&r, refs)
            }
            "set" => {
                let v: ValueRef<'_> = args_in(a)?;
                let old = cx.store_over(&mut c, v)?;
                drop(c);
                drop(old);
                ok(&())
            }
            _ => Err(unknown(VALUE_TYPEID, method)),
        }
    }
}

builtin_proxy! {
    /// A proxy to one shared value (Python's `ValueProxy`, from
    /// [`Manager::value`](crate::manager::Manager::value)): `get` and `set`
    /// of Python's `.value`.
    ///
    /// ```
    /// # multiproc::init();
    /// let manager = multiproc::manager::Manager::start()?;
    /// let v = manager.value(1.5f64)?;
    /// v.set(2.5)?;
    /// assert_eq!(v.get()?, 2.5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ValueProxy[T] "Value"
}

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// The value (Python's `v.value`).
    #[doc(alias = "value")]
    pub fn get(&self) -> Result<T> {
        self.core.call_with("get", &(), decode_one)
    }

    /// Replaces the value (Python's `v.value = x`).
    pub fn set(&self, v: T) -> Result<()> {
        with_value(&self.core, &v, |value| self.core.call("set", &value))
    }
}
