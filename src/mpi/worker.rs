//! A worker rank: reports in, then runs the task messages of rank 0 with the
//! pool's own runners until told to exit.

use super::raw::Comm;
use super::runner::{begin, end, next, runner_at, Runner, FAILED, RESULTS, TASKS};
use super::{
    identity, Hello, Welcome, TAG_BYE, TAG_EXIT, TAG_HELLO, TAG_RESULTS, TAG_TASKS, TAG_WELCOME,
};
use crate::pool::api::backend::install_hook;
use std::time::{Duration, Instant};

/// How long an idle worker sleeps at most between polls.
const IDLE_SLEEP: Duration = Duration::from_micros(250);

/// Serves rank 0 until it says exit, then ends MPI and the process.
pub(crate) fn serve(comm: Comm) -> ! {
    // The program's `main` never runs past `init` here: no logger of its own
    // (see `crate::logging`).
    crate::logging::install_for_helper_process();
    install_hook();
    let code = identity::current();
    let hello = Hello {
        code: code.clone(),
        pid: std::process::id() as i32,
        host: super::hostname(),
    };
    let bytes = crate::codec::encode(&hello).unwrap_or_default();
    if let Err(e) = comm.send(0, TAG_HELLO, &bytes) {
        die(&comm, &format!("cannot report to rank 0: {e}"));
    }
    let mut welcomed = false;
    let mut cache = Vec::new();
    loop {
        let (_, tag, msg) = match comm.recv(Some(0), IDLE_SLEEP) {
            Ok(m) => m,
            Err(e) => die(&comm, &format!("lost rank 0: {e}")),
        };
        match tag {
            TAG_WELCOME => {
                // Rank 0 checked our code; we check its code too before
                // running any offset it sends.
                match crate::codec::decode::<Welcome>(&msg) {
                    Ok(w) if w.code == code => welcomed = true,
                    Ok(w) => {
                        crate::logging::mp_log!(
                            error,
                            target: "multiproc::mpi",
                            "MPI rank {} runs {code}, rank 0 runs {}: not serving",
                            comm.rank,
                            w.code
                        );
                    }
                    Err(e) => {
                        crate::logging::mp_log!(
                            error,
                            target: "multiproc::mpi",
                            "bad welcome from rank 0: {e}"
                        )
                    }
                }
            }
            TAG_TASKS if welcomed => {
                let out = run_message(&mut cache, &msg);
                if let Err(e) = comm.send(0, TAG_RESULTS, &out) {
                    die(&comm, &format!("cannot answer rank 0: {e}"));
                }
            }
            TAG_EXIT => break,
            // Tasks before a welcome, or an unknown tag: never run.
            _ => {}
        }
    }
    let _ = comm.send(0, TAG_BYE, &[]);
    super::finalize();
    std::process::exit(0)
}

/// Ends this rank without finalizing MPI (rank 0 is gone or unreachable:
/// the launcher then ends the job instead of waiting for a finalize).
fn die(comm: &Comm, why: &str) -> ! {
    crate::logging::mp_log!(error, target: "multiproc::mpi", "MPI rank {}: {why}", comm.rank);
    std::process::exit(1)
}

/// Runs every task frame of a message; the answer is the time spent (`u64`
/// nanoseconds, little-endian) and one `RESULTS` or `FAILED` frame per task
/// frame, in order.
pub(crate) fn run_message(cache: &mut Vec<(i64, Option<Runner>)>, msg: &[u8]) -> Vec<u8> {
    let t0 = Instant::now();
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 4 + 64);
    out.extend_from_slice(&[0; 8]);
    let mut rest = msg;
    while let Some((kind, payload, len)) = next(rest) {
        let start = begin(&mut out, RESULTS);
        let ok = if kind != TASKS || payload.len() < 12 {
            Err("malformed task frame".to_string())
        } else {
            let offset = i64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
            let count = u32::from_le_bytes(payload[8..12].try_into().expect("4 bytes"));
            match runner_at(cache, offset) {
                Some(run) => run(&payload[12..], count, &mut out),
                None => Err("the task function cannot be found in this binary".to_string()),
            }
        };
        if let Err(reason) = ok {
            out.truncate(start);
            begin(&mut out, FAILED);
            out.extend_from_slice(reason.as_bytes());
        }
        end(&mut out, start);
        rest = &rest[len..];
    }
    let busy = t0.elapsed().as_nanos().min(u64::MAX as u128) as u64;
    out[..8].copy_from_slice(&busy.to_le_bytes());
    out
}
