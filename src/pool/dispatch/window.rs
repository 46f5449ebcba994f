//! Windowing: which worker gets which batch. A worker holds about 2 ms of
//! work (see `link::Worker::can_take`); an idle worker takes back what
//! another has not started.

use super::super::wire;
use super::{Core, Shared, State};
use crate::error::Result;
use std::sync::Arc;

/// An idle worker takes back the batches another worker has not started
/// when they hold at least this much work (ns, estimated): below it, the
/// round trip costs more than waiting.
const STEAL_MIN_NS: f64 = 300e3;

impl Shared {
    pub(super) fn dispatch(&self, core: &mut Core) -> Result<()> {
        let maxtasks = self.config.maxtasks;
        for round in 0..2 {
            while let Some(b) = core.pending.front() {
                let best = core
                    .workers
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| w.can_take(b, maxtasks))
                    .min_by_key(|(_, w)| w.inflight_tasks)
                    .map(|(i, _)| i);
                let Some(i) = best else { break };
                let b = core.pending.pop_front().expect("front exists");
                let w = &mut core.workers[i];
                w.push(b);
                if maxtasks > 0 && w.sent_batches >= maxtasks && !w.replaced {
                    // It retires after this batch: start its successor now.
                    w.replaced = true;
                    if core.state == State::Running {
                        core.spawn_needed += 1;
                        self.wake_bg();
                    }
                }
            }
            if round == 0 && core.pending.is_empty() && !self.steal(core) {
                break;
            }
        }
        for w in &mut core.workers {
            w.flush()?;
        }
        if core.state == State::Closed && core.pending.is_empty() {
            for w in &mut core.workers {
                if !w.exiting && w.inflight.is_empty() {
                    w.exiting = true;
                    let mut f = Vec::new();
                    let start = wire::begin(&mut f, wire::EXIT);
                    wire::finish(&mut f, start);
                    w.queue(&Arc::new(f));
                    w.flush()?;
                }
            }
        }
        Ok(())
    }

    /// A worker idles while another holds batches it has not started: take
    /// those back into the queue (the caller dispatches them again).
    /// `true` if any were taken.
    pub(super) fn steal(&self, core: &mut Core) -> bool {
        let maxtasks = self.config.maxtasks;
        // A thief must be able to take what it steals at once (else the
        // batches would only go back where they were, again and again).
        if !core
            .workers
            .iter()
            .any(|w| w.inflight.is_empty() && w.open(maxtasks) && w.unsent() == 0)
        {
            return false;
        }
        let victim = core
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| !w.inflight.is_empty())
            .filter_map(|(i, w)| {
                let (tasks, ns) = w.unstarted();
                let ns = ns?;
                (tasks > 0 && ns >= STEAL_MIN_NS).then_some((i, ns))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i);
        let Some(v) = victim else { return false };
        let back = core.workers[v].take_back();
        let any = !back.is_empty();
        for b in back.into_iter().rev() {
            core.pending.push_front(b);
        }
        any
    }
}
