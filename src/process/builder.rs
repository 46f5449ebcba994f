//! [`Builder`]: configuring and starting a child, and the runner a child
//! calls its target through.

use super::*;

/// What a child's standard input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stdin {
    /// `/dev/null` (the default): a child never competes with its parent for
    /// the terminal (CPython's "beware of replacing sys.stdin").
    #[default]
    Null,
    /// The parent's standard input.
    Inherit,
}

/// Configures a process before starting it (Python's `Process(name=...,
/// daemon=...)` with a context's start method).
#[derive(Debug, Clone, Default)]
#[must_use = "a Builder does nothing until `start` is called"]
pub struct Builder {
    name: Option<String>,
    daemon: Option<bool>,
    method: Option<StartMethod>,
    stdin: Stdin,
    /// A helper of the crate itself (the resource tracker), allowed from a
    /// daemon process as CPython's tracker is.
    internal: bool,
    /// Fork without flushing std's stdout first (pool workers, started by a
    /// thread of the pool while the program's thread may hold stdout's lock).
    leave_stdout: bool,
    /// Descriptors kept open at their numbers in the child (opt-in).
    pass_fds: Vec<RawFd>,
}

impl Builder {
    /// A builder with the defaults: generated name, daemon flag inherited from
    /// this process, the default start method, stdin from `/dev/null`.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// The child's name.
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Whether the child is a daemon: ended when this process exits, or is
    /// killed (`PR_SET_PDEATHSIG`), instead of being joined.
    ///
    /// The death signal follows the *thread* that started the child: a daemon
    /// started from a thread that ends is killed then (Linux semantics).
    ///
    /// As in CPython, a daemon process may not start children of its own:
    /// `start` in a daemon returns [`Error::InvalidState`] ("daemonic processes
    /// are not allowed to have children"), since they would be orphaned
    /// when it is ended.
    pub fn daemon(mut self, daemon: bool) -> Builder {
        self.daemon = Some(daemon);
        self
    }

    /// The start method (default: [`get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Builder {
        self.method = Some(method);
        self
    }

    /// The child's standard input.
    pub fn stdin(mut self, stdin: Stdin) -> Builder {
        self.stdin = stdin;
        self
    }

    /// Keeps descriptor `fd` open, at the same number, in the child (as
    /// `subprocess`'s `pass_fds`).
    ///
    /// A child gets its resources as arguments; every other descriptor of
    /// this process is closed in the child under every start method (under
    /// *fork* too, where CPython keeps them all). Use this for a descriptor
    /// the child finds by number, e.g. a log file opened before the start.
    /// `fd` must stay open until [`start`](Self::start) returns.
    pub fn pass_fd(mut self, fd: impl AsRawFd) -> Builder {
        self.pass_fds.push(fd.as_raw_fd());
        self
    }

    /// Marks a helper process of the crate itself, which a daemon process
    /// may start (the resource tracker).
    pub(crate) fn internal(mut self) -> Builder {
        self.internal = true;
        self
    }

    /// Forks without flushing std's stdout (see `leave_stdout`); the child
    /// then leaves stdout's buffer unflushed at exit.
    pub(crate) fn leave_stdout(mut self) -> Builder {
        self.leave_stdout = true;
        self
    }

    /// Starts `target(*args)` in a new process: `Process::start(add, (2, 3))`
    /// calls `add(2, 3)`, and a one-argument target takes a one-tuple,
    /// `Process::start(square, (7,))`, as in Python.
    ///
    /// `target` must be a `fn` item or a closure that captures nothing (a
    /// compile-time check, see [`TaskFn`]); `args` is a tuple of values and
    /// resources (see [`handoff`](crate::handoff)).
    pub fn start<F, A, R>(self, target: F, args: A) -> Result<Process<R>>
    where
        F: TaskFn<A, R>,
        A: Args,
        R: Serialize + DeserializeOwned,
    {
        fnref::check_target(target);
        self.start_runner(RunnerOf::<F, A, R>::DESC, &args, None)
    }

    pub(super) fn start_runner<A: Args, R>(
        self,
        runner: &'static FnDesc<Runner>,
        args: &A,
        tamper: Option<spawn::Tamper>,
    ) -> Result<Process<R>> {
        bootstrap::check_bootstrapped()?;
        registry::reap_finished();
        let me = current_process();
        if me.daemon && !self.internal {
            return Err(Error::InvalidState(
                "daemonic processes are not allowed to have children".into(),
            ));
        }
        let parent_path = CURRENT.get().map(|i| i.path.clone()).unwrap_or_default();
        let n = CURRENT.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let mut path = parent_path;
        path.push(n);
        let name = self.name.unwrap_or_else(|| {
            let p: Vec<String> = path.iter().map(|i| i.to_string()).collect();
            format!("Process-{}", p.join(":"))
        });
        let daemon = self.daemon.unwrap_or(me.daemon);
        let identity = ChildIdentity {
            name: name.clone(),
            daemon,
            parent_pid: me.pid,
            parent_token: crate::sys::liveness::current_token(),
            parent_name: me.name,
            path,
        };
        let mut ex = Exporter::new();
        args.export_all(&mut ex)?;
        let launch = Launch {
            identity,
            stdin: self.stdin,
            args: ex.bytes(),
            fds: ex.fds(),
            pass_fds: &self.pass_fds,
        };
        let (shared, report, watch_report) = match self.method.unwrap_or_else(get_start_method) {
            StartMethod::Fork => {
                let (pid, report) = fork::launch(launch, !self.leave_stdout, runner.get())?;
                (ChildShared::new(pid, name, daemon), report, true)
            }
            StartMethod::Spawn => {
                let (pid, report) = spawn::launch(launch, fnref::name(runner), tamper)?;
                (ChildShared::new(pid, name, daemon), report, true)
            }
            StartMethod::Forkserver => {
                let s = forkserver::launch(launch, fnref::name(runner))?;
                let shared = ChildShared::forkserver_child(s.pid, name, daemon, s.pidfd, s.status);
                (shared, s.report, false)
            }
        };
        // A fork or spawn child is watched through its report socket while
        // this handle lives: no other descriptor is held for it meanwhile
        // (see the registry's docs on why that matters).
        let report = registry::register(shared.clone(), report, watch_report);
        Ok(Process {
            shared,
            report,
            reports: bootstrap::ReportReader::new(),
            result: None,
            _r: PhantomData,
        })
    }
}

/// The child side of a target: imports the arguments, calls the target, and
/// encodes its return value. Reached only through [`RunnerOf::DESC`].
fn runner<F, A, R>(im: &mut Importer) -> Result<Vec<u8>>
where
    F: TaskFn<A, R>,
    A: Args,
    R: Serialize,
{
    let args = A::import_all(im)?;
    // SAFETY: this runner is reached only through `RunnerOf::<F, A, R>::DESC`,
    // which `Builder::start` names after receiving a value of `F` (in this
    // process, or in the parent that started it from the same binary).
    let f: F = unsafe { fnref::conjure::<F, A, R>() };
    let value = f.call(args);
    crate::codec::encode(&value)
}

/// The named descriptor of `runner::<F, A, R>`.
pub(super) struct RunnerOf<F, A, R>(PhantomData<(F, A, R)>);

impl<F, A, R> RunnerOf<F, A, R>
where
    F: TaskFn<A, R>,
    A: Args,
    R: Serialize,
{
    pub(super) const DESC: &'static FnDesc<Runner> = &FnDesc::new(runner::<F, A, R>);
}
