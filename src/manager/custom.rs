//! Registered types (CPython's `BaseManager.register(typeid, callable)`):
//! an ordinary type whose `impl` block carries `#[multiproc::managed]`
//! lives in the server; its proxy has the same methods.

use super::collect::encode_collecting;
use super::registry::{CallCx, Fail, Object, Out};
use super::token::WireAddr;
use super::Proxy;
use crate::codec;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::Any;
use std::cell::RefCell;
use std::sync::Mutex;

/// A type whose values can live in a manager's server, with a generated
/// proxy. Implemented by `#[multiproc::managed]` on the type's `impl` block
/// (do not implement it by hand): every `pub fn` of that block taking
/// `&self` or `&mut self` becomes a proxy method of the same name, and no
/// other method is reachable (CPython's `exposed`).
///
/// In the server each object sits behind a mutex: one method call runs at
/// a time per object. A method that blocks (waits for another call, say)
/// holds that mutex and its caller's connection until it returns; prefer
/// the builtin [`ConditionProxy`](super::ConditionProxy) or
/// [`QueueProxy`](super::QueueProxy) for waiting. A panic in a method is
/// answered as [`Error::Remote`](crate::Error::Remote); the object stays
/// usable (its mutex is not poisoned for later calls).
///
/// The registered name is the type's name without its module path: two
/// registered types of the same name in one manager are not supported.
pub trait Managed: Send + 'static {
    /// The registered name (the type's name).
    const TYPEID: &'static str;
    /// The generated proxy type (`<Type>Proxy`).
    type Proxy: Proxy;

    /// Runs `method` on `self` with encoded arguments (generated).
    #[doc(hidden)]
    fn __dispatch(
        &mut self,
        method: &str,
        args: &[u8],
    ) -> Result<__private::Returned, __private::DispatchError>;
}

/// A list of registered types, built by
/// [`ManagerBuilder::register`](super::ManagerBuilder::register): `()` is
/// empty, `(T, Rest)` adds `T`.
pub trait TypeList: 'static {
    /// Builds an object of the registered type named `typeid`.
    #[doc(hidden)]
    fn __make(typeid: &str, args: &[u8]) -> Option<Result<Box<dyn Any + Send>, String>>;
}

impl TypeList for () {
    fn __make(_: &str, _: &[u8]) -> Option<Result<Box<dyn Any + Send>, String>> {
        None
    }
}

impl<T: Managed + DeserializeOwned, R: TypeList> TypeList for (T, R) {
    fn __make(typeid: &str, args: &[u8]) -> Option<Result<Box<dyn Any + Send>, String>> {
        if typeid == T::TYPEID {
            return Some(
                codec::decode::<T>(args)
                    .map(CustomObj::<T>::boxed)
                    .map_err(|e| format!("bad {} value: {e}", T::TYPEID)),
            );
        }
        R::__make(typeid, args)
    }
}

/// The server's factory for a type list.
pub(crate) fn factory<L: TypeList>(
    typeid: &str,
    args: &[u8],
) -> Option<Result<Box<dyn Object>, Fail>> {
    let made = L::__make(typeid, args)?;
    Some(match made {
        Ok(any) => any_to_object(any),
        Err(e) => Err(Fail::Remote(e)),
    })
}

/// Each `CustomObj<T>` registers how to become an `Object` through this
/// conversion (the `Any` detour keeps `Object` crate-private).
fn any_to_object(any: Box<dyn Any + Send>) -> Result<Box<dyn Object>, Fail> {
    match any.downcast::<Box<dyn Object>>() {
        Ok(b) => Ok(*b),
        Err(_) => Err(Fail::remote(
            "internal: registered type of unexpected shape",
        )),
    }
}

struct CustomObj<T>(Mutex<T>);

/// Whether a registered type's method is running on this thread, and the
/// address of its server. The address stays between calls (a serving
/// thread serves one server: it is set once, not copied per call).
struct Serving {
    active: bool,
    address: Option<WireAddr>,
}

thread_local! {
    static SERVING: RefCell<Serving> = const {
        RefCell::new(Serving { active: false, address: None })
    };
}

impl<T: Managed> Object for CustomObj<T> {
    fn call(&self, cx: &mut CallCx<'_>, method: &str, args: &[u8]) -> Result<Out, Fail> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (was_active, prev_address) = SERVING.with(|s| {
            let mut s = s.borrow_mut();
            let prev = if s.address.as_ref() != cx.address() {
                Some(std::mem::replace(&mut s.address, cx.address().cloned()))
            } else {
                None
            };
            (std::mem::replace(&mut s.active, true), prev)
        });
        let res =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.__dispatch(method, args)));
        SERVING.with(|s| {
            let mut s = s.borrow_mut();
            s.active = was_active;
            // Inside another server's call (not seen in practice): its address again.
            if let (true, Some(a)) = (was_active, prev_address) {
                s.address = a;
            }
        });
        drop(g);
        let res = match res {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        };
        match res {
            Ok(r) => Ok(Out {
                bytes: r.bytes,
                refs: cx.resolve(&r.refs).map_err(Fail::Remote)?,
            }),
            Err(__private::DispatchError::Method(b)) => Err(Fail::Method(b)),
            Err(__private::DispatchError::Remote(m)) => Err(Fail::Remote(m)),
        }
    }
}

// `TypeList::__make` boxes a `Box<dyn Object>` as `Any`: do that here.
impl<T: Managed> CustomObj<T> {
    fn boxed(v: T) -> Box<dyn Any + Send> {
        Box::new(Box::new(CustomObj(Mutex::new(v))) as Box<dyn Object>)
    }
}

/// Support for the code `#[multiproc::managed]` generates. Not public API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use crate::manager::ProxyCore;
    pub use serde;

    /// An encoded return value and the server objects it refers to.
    #[derive(Debug)]
    pub struct Returned {
        pub(crate) bytes: Vec<u8>,
        pub(crate) refs: Vec<u64>,
    }

    /// Why a generated dispatch failed.
    #[derive(Debug)]
    pub enum DispatchError {
        /// The method's own `Err`, encoded.
        Method(Vec<u8>),
        /// Anything else.
        Remote(String),
    }

    /// Decodes a method's argument tuple.
    pub fn args<A: DeserializeOwned>(method: &str, b: &[u8]) -> Result<A, DispatchError> {
        codec::decode(b)
            .map_err(|e| DispatchError::Remote(format!("bad arguments for {method:?}: {e}")))
    }

    /// Encodes a method's return value.
    pub fn ret<T: Serialize + ?Sized>(v: &T) -> Result<Returned, DispatchError> {
        let mut bytes = Out::spare();
        let refs = SERVING
            .with(|s| match &*s.borrow() {
                Serving {
                    active: true,
                    address: Some(a),
                } => encode_collecting(a, v, &mut bytes),
                _ => codec::encode_into(v, &mut bytes).map(|_| Vec::new()),
            })
            .map_err(|e| DispatchError::Remote(e.to_string()))?;
        Ok(Returned { bytes, refs })
    }

    /// Encodes a method's `Result`: `Err(e)` becomes the call's own error.
    pub fn ret_result<T: Serialize, E: Serialize>(
        r: &Result<T, E>,
    ) -> Result<Returned, DispatchError> {
        match r {
            Ok(v) => ret(v),
            Err(e) => Err(DispatchError::Method(
                codec::encode(e).map_err(|e| DispatchError::Remote(e.to_string()))?,
            )),
        }
    }

    /// The answer for a method the type does not expose.
    pub fn unknown(typeid: &str, method: &str) -> DispatchError {
        DispatchError::Remote(format!("{typeid} exposes no method {method:?}"))
    }
}
