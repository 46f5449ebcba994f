//! Hooks for tests of hostile bootstrap input (`test-hooks` feature). Not
//! part of the API.

use super::builder::RunnerOf;
use super::*;
use std::sync::Mutex;

/// Kinds of damage done to a spawned child's bootstrap message.
#[derive(Debug, Clone, Copy)]
pub enum Damage {
    /// Only the first N bytes are sent.
    Truncate(usize),
    /// One payload byte is flipped.
    FlipByte(usize),
    /// The binary identity is changed (as if the binary were replaced).
    WrongBinary,
    /// The runner offset points outside any runner.
    BadTarget,
    /// The runner offset points inside the body of the target's runner
    /// function (code of this binary, but no descriptor).
    InsideFunction,
    /// The runner offset names a genuine descriptor of another kind (a
    /// barrier action's), not a process runner's.
    WrongKind,
    /// Random bytes instead of a message.
    Garbage,
}

fn nothing() {}

/// A genuine descriptor of another kind (a barrier action's).
const ACTION: &FnDesc<fn()> = &FnDesc::new(nothing);

/// Starts `nothing` by spawn with a damaged bootstrap message.
pub fn spawn_damaged(damage: Damage) -> Result<Process<()>> {
    static DAMAGE: Mutex<Option<Damage>> = Mutex::new(None);
    *DAMAGE.lock().unwrap() = Some(damage);
    fn tamper(msg: &mut bootstrap::BootMsg, wire: &mut Vec<u8>) {
        let d = DAMAGE.lock().unwrap().take();
        match d {
            Some(Damage::WrongBinary) => {
                msg.binary = {
                    let mut b = msg.binary;
                    b.scramble();
                    b
                }
            }
            Some(Damage::BadTarget) => msg.runner_offset = msg.runner_offset.wrapping_add(1 << 40),
            Some(Damage::InsideFunction) => {
                let code = runner_of(nothing).get() as usize;
                msg.runner_offset = fnref::offset_of(code + 16);
            }
            Some(Damage::WrongKind) => msg.runner_offset = fnref::name(ACTION),
            _ => {}
        }
        *wire = bootstrap::encode_boot(msg).unwrap();
        match d {
            Some(Damage::Truncate(n)) => wire.truncate(n),
            Some(Damage::FlipByte(i)) => {
                let i = 12 + i % (wire.len() - 20);
                wire[i] ^= 0x5a;
            }
            Some(Damage::Garbage) => {
                for (i, b) in wire.iter_mut().enumerate() {
                    *b = (i as u8).wrapping_mul(31).wrapping_add(7);
                }
            }
            _ => {}
        }
    }
    Builder::new()
        .start_method(StartMethod::Spawn)
        .start_runner::<(), ()>(runner_of(nothing), &(), Some(tamper))
}

/// A genuine bootstrap message (as a parent sends it) that starts
/// `nothing`, for tests of the channel it arrives on.
pub fn boot_message() -> Result<Vec<u8>> {
    bootstrap::encode_boot(&bootstrap::BootMsg {
        binary: fnref::BinaryId::current()?,
        runner_offset: fnref::name(runner_of(nothing)),
        identity: ChildIdentity {
            name: "Process-crafted".into(),
            daemon: false,
            parent_pid: std::process::id() as i32,
            parent_token: 0,
            parent_name: "MainProcess".into(),
            path: vec![1],
        },
        nfds: 0,
        keep: Vec::new(),
        close_others: false,
        args: Vec::new(),
    })
}

/// The pid of this process's fork server, if one is running.
pub fn forkserver_pid() -> Option<i32> {
    forkserver::server_pid()
}

/// Sends a hand-made request (these bytes, `nfds` descriptors) to this
/// process's fork server; `Ok(true)` if it forked a child for it.
pub fn forkserver_raw_request(bytes: &[u8], nfds: usize) -> Result<bool> {
    forkserver::raw_request(bytes, nfds)
}

/// A well-formed fork server request header for `nfds` descriptors.
pub fn forkserver_header(nfds: u32) -> Vec<u8> {
    forkserver::header(nfds)
}

/// Sets how long a spawned child may leave its start message unread
/// before `start` gives up (default 30 s).
pub fn set_boot_stall(limit: Duration) {
    spawn::set_boot_stall(limit)
}

/// Makes spawned children close the descriptors they do not keep
/// themselves after `exec` (the path taken with a libc whose
/// `posix_spawn` cannot close them), or not (the default).
pub fn spawn_child_closes(on: bool) {
    spawn::set_child_closes(on)
}

/// Whether this process parks its children's report sockets in an
/// `io_uring` (so that a live child costs it no descriptor), or keeps
/// them in its descriptor table (no `io_uring`, or the environment
/// variable `MULTIPROC_NO_IO_URING` set).
pub fn parks_report_sockets() -> bool {
    registry::parks_report_sockets()
}

fn runner_of<F, A, R>(f: F) -> &'static FnDesc<Runner>
where
    F: TaskFn<A, R>,
    A: Args,
    R: Serialize,
{
    fnref::check_target(f);
    RunnerOf::<F, A, R>::DESC
}
