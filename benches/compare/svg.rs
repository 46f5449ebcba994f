//! The chart: per figure, multiproc's speedup over CPython and its cost in
//! units of the C floor, as two panels of horizontal bars on log scales.
//! A small hand-written SVG writer (no plotting dependency).

use std::fmt::Write as _;

/// One row of the chart.
pub struct Row {
    /// What was measured, for people.
    pub label: String,
    /// CPython's cost / multiproc's (> 1: multiproc is faster).
    pub speedup: Option<f64>,
    /// multiproc's cost / the C floor's (1 = at the floor).
    pub vs_floor: Option<f64>,
}

/// A readable label for a figure name (the name itself if unknown).
pub fn label(name: &str) -> String {
    const LABELS: &[(&str, &str)] = &[
        ("process_start_join_fork_ms", "start+join, fork"),
        (
            "process_start32_join_all_fork_ms",
            "32 started then joined, fork",
        ),
        (
            "process_start_join_fork_2000_live_ms",
            "start+join, fork, 2000 children alive",
        ),
        (
            "process_start_join_fork_2000_live_vs_fds_ms",
            "same, floor: fork with 2000 descriptors",
        ),
        ("process_start_join_forkserver_ms", "start+join, forkserver"),
        ("process_start_join_spawn_ms", "start+join, spawn"),
        (
            "process_start_join_spawn_vs_self_ms",
            "same, floor: exec of this program",
        ),
        (
            "process_start32_join_all_spawn_ms",
            "32 started then joined, spawn",
        ),
        ("pipe_pingpong_int_rtt_us", "Pipe() int round trip"),
        (
            "pipe_pingpong_int_rtt_async_us",
            "same, through AsyncConnection",
        ),
        (
            "pipe_pingpong_int_rtt_same_cpu_us",
            "Pipe() int round trip, one CPU",
        ),
        (
            "pipe_simplex_pingpong_int_rtt_us",
            "Pipe(duplex=False) round trip",
        ),
        ("pipe_send_bytes_64k_MBps", "send_bytes 64 KiB"),
        (
            "pipe_send_bytes_64k_fresh_MBps",
            "same, received by recv_bytes()",
        ),
        ("pipe_send_bytes_1m_MBps", "send_bytes 1 MiB"),
        (
            "pipe_simplex_send_bytes_64k_MBps",
            "send_bytes 64 KiB, simplex",
        ),
        (
            "pipe_simplex_send_bytes_1m_MBps",
            "send_bytes 1 MiB, simplex",
        ),
        ("queue_1prod_int_items_per_s", "Queue ints, 1 producer"),
        ("queue_4prod_int_items_per_s", "Queue ints, 4 producers"),
        (
            "simplequeue_1prod_int_items_per_s",
            "SimpleQueue ints, 1 producer",
        ),
        (
            "simplequeue_4prod_int_items_per_s",
            "SimpleQueue ints, 4 producers",
        ),
        ("queue_1prod_1MiB_bytes_MBps", "Queue 1 MiB byte items"),
        ("queue_1prod_1MiB_vec_u8_MBps", "Queue 1 MiB Vec<u8> items"),
        (
            "pool_cpu_bound_speedup_2_vs_1_workers",
            "CPU-bound, 2 workers vs 1",
        ),
        (
            "pool2_map_default_chunksize_tasks_per_s",
            "Pool(2).map, default chunksize",
        ),
        (
            "pool2_map_chunksize1_tasks_per_s",
            "Pool(2).map, chunksize 1",
        ),
        (
            "pool2_imap_unordered_chunksize1_tasks_per_s",
            "imap_unordered, chunksize 1",
        ),
        ("pool2_apply_async_get_latency_us", "apply_async().get()"),
        (
            "pool2_apply_async_await_latency_us",
            "apply_async().await (tokio)",
        ),
        ("lock_uncontended_acq_rel_ops_per_s", "Lock acquire+release"),
        (
            "lock_2proc_contended_incr_ops_per_s",
            "2 processes, counter under a Lock",
        ),
        (
            "value_lock_2proc_contended_incr_ops_per_s",
            "2 processes, Value under its lock",
        ),
        (
            "shared_memory_create_attach_close_unlink_us",
            "SharedMemory create+attach+unlink",
        ),
        (
            "process_start_join_spawn_1gib_parent_ms",
            "start+join, spawn, parent holding 1 GiB",
        ),
        (
            "process_start_join_spawn_1gib_parent_vs_self_ms",
            "same, floor: exec of this program",
        ),
        (
            "process_start32_join_all_forkserver_ms",
            "32 started then joined, forkserver",
        ),
        (
            "pool2_map_1MiB_bytes_MBps",
            "Pool(2).map, 200 × 1 MiB bytes",
        ),
        ("manager_dict_rtt_us", "managed dict, one set or get"),
        (
            "manager_dict_rtt_same_cpu_us",
            "managed dict, one set or get, one CPU",
        ),
        ("manager_queue_put_get_us", "managed Queue, put then get"),
        ("manager_queue_items_per_s", "managed Queue, items through"),
        (
            "manager_queue_get_many_items_per_s",
            "managed Queue, get_many(256)",
        ),
        (
            "aio_queue_1prod_int_sync_get_items_per_s",
            "Queue ints, blocking consumer (aio twin)",
        ),
        (
            "aio_queue_1prod_int_get_async_items_per_s",
            "Queue ints, get_async consumer",
        ),
        (
            "aio_pipe_pingpong_int_rtt_sync_us",
            "Pipe round trip, blocking (aio twin)",
        ),
        (
            "aio_pipe_pingpong_int_rtt_async_us",
            "Pipe round trip, AsyncConnection (aio twin)",
        ),
    ];
    LABELS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or_else(|| name.to_string(), |(_, l)| l.to_string())
}

/// A log10 axis covering whole decades around the values and 1.
struct Axis {
    lo: f64,
    hi: f64,
    x0: f64,
    width: f64,
}

impl Axis {
    fn new(values: impl Iterator<Item = f64>, x0: f64, width: f64) -> Axis {
        let (mut lo, mut hi) = (0.0f64, 0.0f64);
        for v in values.filter(|v| v.is_finite() && *v > 0.0) {
            lo = lo.min(v.log10());
            hi = hi.max(v.log10());
        }
        let (lo, mut hi) = (lo.floor(), hi.ceil());
        if hi <= lo {
            hi = lo + 1.0;
        }
        Axis { lo, hi, x0, width }
    }

    fn x(&self, v: f64) -> f64 {
        let t = (v.max(1e-12).log10() - self.lo) / (self.hi - self.lo);
        self.x0 + t.clamp(0.0, 1.0) * self.width
    }

    fn decades(&self) -> impl Iterator<Item = f64> {
        (self.lo as i32..=self.hi as i32).map(|e| 10f64.powi(e))
    }
}

fn times(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}×")
    } else if v >= 10.0 {
        format!("{v:.1}×")
    } else if v >= 0.1 {
        format!("{v:.2}×")
    } else {
        format!("{v:.3}×")
    }
}

/// A decade tick: 0.01×, 0.1×, 1×, 10×, 100×.
fn decade(v: f64) -> String {
    let e = v.log10().round() as i32;
    if e < 0 {
        format!("{:.*}×", (-e) as usize, v)
    } else {
        format!("{v:.0}×")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const ROW_H: f64 = 24.0;
const TOP: f64 = 86.0;
const LABEL_W: f64 = 270.0;
const PANEL_W: f64 = 330.0;
const GAP: f64 = 50.0;
const GOOD: &str = "#2a9d5c";
const BAD: &str = "#d1495b";
const FLOOR: &str = "#e09f3e";
const UNDER: &str = "#3d7ab8";

/// One panel: bars from 1× to each row's value.
#[allow(clippy::too_many_arguments)]
fn panel(
    svg: &mut String,
    rows: &[Row],
    axis: &Axis,
    title: &str,
    hint: &str,
    pick: impl Fn(&Row) -> Option<f64>,
    colour: impl Fn(f64) -> &'static str,
) {
    let bottom = TOP + ROW_H * rows.len() as f64;
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" class="h">{}</text><text x="{:.1}" y="{:.1}" class="s">{}</text>"#,
        axis.x0,
        TOP - 34.0,
        escape(title),
        axis.x0,
        TOP - 18.0,
        escape(hint)
    );
    for d in axis.decades() {
        let x = axis.x(d);
        let one = (d - 1.0).abs() < 1e-9;
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{bottom:.1}" class="{}"/><text x="{x:.1}" y="{:.1}" class="t">{}</text>"#,
            TOP - 6.0,
            if one { "one" } else { "grid" },
            bottom + 16.0,
            decade(d)
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let y = TOP + ROW_H * i as f64;
        let Some(v) = pick(row) else {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" class="na">–</text>"#,
                axis.x(1.0) + 4.0,
                y + ROW_H * 0.68
            );
            continue;
        };
        let (a, b) = (axis.x(1.0), axis.x(v));
        let (x, w) = (a.min(b), (a - b).abs().max(1.0));
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="{}"/>"#,
            y + 4.0,
            ROW_H - 8.0,
            colour(v)
        );
        // The value sits past the bar's outer end, or inside the bar (in
        // white) when the panel's edge is too close.
        let room = 44.0;
        let (tx, anchor, fill) = if v >= 1.0 {
            if b + room > axis.x0 + axis.width {
                (b - 4.0, "end", "#fff")
            } else {
                (b + 4.0, "start", "#222")
            }
        } else if b - room < axis.x0 {
            (b + 4.0, "start", "#fff")
        } else {
            (b - 4.0, "end", "#222")
        };
        let _ = writeln!(
            svg,
            r#"<text x="{tx:.1}" y="{:.1}" class="v" text-anchor="{anchor}" fill="{fill}">{}</text>"#,
            y + ROW_H * 0.68,
            times(v)
        );
    }
}

/// The whole chart as an SVG document; `subtitle` says when and where,
/// `footer` how to make it again.
pub fn chart(rows: &[Row], subtitle: &str, footer: &str) -> String {
    let left = Axis::new(rows.iter().filter_map(|r| r.speedup), LABEL_W, PANEL_W);
    let right = Axis::new(
        rows.iter().filter_map(|r| r.vs_floor),
        LABEL_W + PANEL_W + GAP,
        PANEL_W,
    );
    let width = LABEL_W + 2.0 * PANEL_W + GAP + 30.0;
    let height = TOP + ROW_H * rows.len() as f64 + 56.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
<style>
.h {{ font-size: 14px; font-weight: bold; fill: #222 }}
.s {{ font-size: 11px; fill: #555 }}
.l {{ font-size: 12px; fill: #222 }}
.t {{ font-size: 10px; fill: #666; text-anchor: middle }}
.v {{ font-size: 11px }}
.na {{ font-size: 11px; fill: #999 }}
.grid {{ stroke: #ddd; stroke-width: 1 }}
.one {{ stroke: #333; stroke-width: 1.5 }}
</style>
<rect width="100%" height="100%" fill="#fff"/>
<text x="12" y="20" class="h">multiproc vs CPython multiprocessing vs the C floor</text>
<text x="12" y="36" class="s">{}</text>"##,
        escape(subtitle)
    );
    for (i, row) in rows.iter().enumerate() {
        let y = TOP + ROW_H * i as f64;
        if i % 2 == 0 {
            let _ = writeln!(
                svg,
                r##"<rect x="6" y="{y:.1}" width="{:.1}" height="{ROW_H}" fill="#f4f4f4"/>"##,
                width - 12.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" class="l" text-anchor="end">{}</text>"#,
            LABEL_W - 10.0,
            y + ROW_H * 0.68,
            escape(&row.label)
        );
    }
    panel(
        &mut svg,
        rows,
        &left,
        "Speedup over CPython (log scale)",
        "right of 1×: multiproc is faster",
        |r| r.speedup,
        |v| if v >= 1.0 { GOOD } else { BAD },
    );
    panel(
        &mut svg,
        rows,
        &right,
        "Cost relative to the C floor (log scale)",
        "1× = as cheap as the C program; left of 1×: cheaper",
        |r| r.vs_floor,
        |v| if v <= 1.0 { UNDER } else { FLOOR },
    );
    let _ = writeln!(
        svg,
        r#"<text x="12" y="{:.1}" class="s">{}</text>"#,
        height - 10.0,
        escape(footer)
    );
    svg.push_str("</svg>\n");
    svg
}
