//! The one calling convention: `target(*args)`.

/// A target a process or a pool can run: a `fn` item or a closure that
/// captures nothing, called with the elements of the argument tuple `A` as
/// its arguments (Python's `target(*args)`).
///
/// [`Process::start`](crate::Process::start), [`Pool::apply`](crate::Pool::apply),
/// [`Pool::starmap`](crate::Pool::starmap) and the other entry points share
/// this one calling convention.
///
/// Implemented for every such callable of 0 to 8 arguments:
/// `fn add(a: u64, b: u64) -> u64` is a `TaskFn<(u64, u64), u64>`, and
/// `fn square(x: u64) -> u64` a `TaskFn<(u64,), u64>`. The child rebuilds the
/// function from its type alone, so a capturing closure is a
/// compile-time error.
///
/// Rebuilding happens only inside the crate, for a function it was handed:
/// there is no public way to make a value of a zero-sized type from nothing.
///
/// ```compile_fail,E0425
/// #[derive(Clone, Copy)]
/// struct Token;
/// let t: Token = multiproc::process::conjure::<Token>();
/// ```
pub trait TaskFn<A, R>: Copy + Send + Sync + 'static {
    /// Calls the function with the tuple's elements.
    fn call(&self, args: A) -> R;
}

macro_rules! impl_task_fn {
    ($($a:ident)*) => {
        impl<Func, Ret, $($a),*> TaskFn<($($a,)*), Ret> for Func
        where
            Func: Fn($($a),*) -> Ret + Copy + Send + Sync + 'static,
        {
            #[allow(non_snake_case)]
            fn call(&self, ($($a,)*): ($($a,)*)) -> Ret {
                self($($a),*)
            }
        }
    };
}
impl_task_fn!();
impl_task_fn!(A);
impl_task_fn!(A B);
impl_task_fn!(A B C);
impl_task_fn!(A B C D);
impl_task_fn!(A B C D E);
impl_task_fn!(A B C D E F);
impl_task_fn!(A B C D E F G);
impl_task_fn!(A B C D E F G H);
