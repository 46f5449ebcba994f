//! multiproc against CPython `multiprocessing` and the C floor, in one run.
//!
//! ```text
//! cargo bench --bench compare                      # every section, a table
//! cargo bench --bench compare -- --only start,pipe # some sections
//! cargo bench --bench compare -- --json            # one JSON object
//! cargo bench --bench compare -- --svg docs/bench.svg # also draw the chart
//! cargo bench --bench compare -- --markdown        # also README's table
//! cargo bench --bench compare -- --reps 3 --scale 0.2 --no-python --no-floor
//! ```
//!
//! Sections carry `bench_mp.py`'s names. Each multiproc figure has the name of
//! the CPython figure it compares with; `speedup` > 1 means multiproc is
//! better (python/multiproc for times, multiproc/python for rates). Figures
//! paired with the C floor add `floor`. Both baselines live in
//! `benches/baseline/`: `bench_mp.py` (run with `python3`) and `limits.c`
//! (built with `cc`); see [`baseline`].

use std::path::{Path, PathBuf};
use std::time::Instant;

#[cfg(feature = "tokio")]
mod aio;
mod baseline;
mod lock;
mod manager;
mod markdown;
mod pipe;
mod pool;
mod queue;
mod shm;
mod start;
mod svg;

/// A section's entry point: records its figures.
type Section = fn(&mut Bench);

/// The sections, in `bench_mp.py`'s order.
const SECTIONS: &[(&str, Section)] = &[
    ("start", start::run),
    ("pipe", pipe::run),
    ("queue", queue::run),
    ("pool", pool::run),
    ("lock", lock::run),
    ("shm", shm::run),
    ("manager", manager::run),
    // Async figures next to their blocking twins (no CPython counterpart).
    #[cfg(feature = "tokio")]
    ("aio", aio::section),
];

/// How a figure is measured; the prefix says whether lower or higher is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)]
pub enum Unit {
    /// Milliseconds per operation (lower is better); the string is the unit text.
    Ms(&'static str),
    /// Microseconds per operation (lower is better).
    Us(&'static str),
    /// Operations per second (higher is better).
    Rate(&'static str),
    /// MB/s, MB = 10^6 bytes (higher is better).
    MBps,
}

impl Unit {
    fn text(self) -> &'static str {
        match self {
            Unit::Ms(t) | Unit::Us(t) | Unit::Rate(t) => t,
            Unit::MBps => "MB/s",
        }
    }
    fn lower_is_better(self) -> bool {
        matches!(self, Unit::Ms(_) | Unit::Us(_))
    }
    /// Scale to a common base: seconds for times, 1 for rates.
    fn base(unit_text: &str) -> f64 {
        if unit_text.starts_with("ms") {
            1e-3
        } else if unit_text.starts_with("us") {
            1e-6
        } else {
            1.0
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    name: String,
    unit: Unit,
    value: f64,
    /// The CPython figure it pairs with, when its name differs.
    python: Option<String>,
    floor: Option<String>,
}

/// What a section records into.
#[derive(Debug)]
pub struct Bench {
    /// Timed repetitions per figure (after one warm-up).
    pub reps: usize,
    /// Multiplies every N (as `bench_mp.py --scale`).
    pub scale: f64,
    figures: Vec<Figure>,
}

impl Bench {
    /// `n` scaled, at least 1.
    pub fn n(&self, n: usize) -> usize {
        ((n as f64 * self.scale) as usize).max(1)
    }

    /// Runs `f` once to warm up, then `reps` times, and records the median.
    pub fn record(&mut self, name: &str, unit: Unit, f: impl FnMut() -> f64) {
        self.record_inner(name, unit, None, f)
    }

    /// As [`record`](Self::record), paired with the C floor figure `floor`.
    pub fn record_vs_floor(&mut self, name: &str, unit: Unit, floor: &str, f: impl FnMut() -> f64) {
        self.record_inner(name, unit, Some(floor.to_string()), f)
    }

    /// As [`record_vs_floor`](Self::record_vs_floor), paired with a CPython
    /// figure of another name (two multiproc figures measuring the same
    /// CPython operation in different ways).
    pub fn record_paired(
        &mut self,
        name: &str,
        unit: Unit,
        python: &str,
        floor: &str,
        f: impl FnMut() -> f64,
    ) {
        self.record_inner(name, unit, Some(floor.to_string()), f);
        if let Some(last) = self.figures.last_mut() {
            last.python = Some(python.to_string());
        }
    }

    /// The value recorded last under `name`.
    #[allow(dead_code)] // used by the `aio` section (feature `tokio`)
    pub fn figure(&self, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .rev()
            .find(|f| f.name == name)
            .map(|f| f.value)
    }

    /// The figure just recorded once more, under `name` and against another
    /// C floor (the same measurement seen against a second baseline; not
    /// measured again). Its CPython pair is the first one's.
    pub fn again_vs_floor(&mut self, name: &str, floor: &str) {
        let Some(last) = self.figures.last() else {
            return;
        };
        let again = Figure {
            name: name.to_string(),
            unit: last.unit,
            value: last.value,
            python: Some(last.python.clone().unwrap_or_else(|| last.name.clone())),
            floor: Some(floor.to_string()),
        };
        eprintln!(
            "  {name:<46} {:>14.3} {:<12} (the figure above)",
            again.value,
            again.unit.text()
        );
        self.figures.push(again);
    }

    fn record_inner(
        &mut self,
        name: &str,
        unit: Unit,
        floor: Option<String>,
        mut f: impl FnMut() -> f64,
    ) {
        f();
        let mut samples: Vec<f64> = (0..self.reps).map(|_| f()).collect();
        samples.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let value = median(&samples);
        eprintln!(
            "  {name:<46} {value:>14.3} {:<12} [{:.3} .. {:.3}]",
            unit.text(),
            samples[0],
            samples[samples.len() - 1]
        );
        self.figures.push(Figure {
            name: name.to_string(),
            unit,
            value,
            python: None,
            floor,
        });
    }
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    }
}

/// Seconds since `t0` (helper for sections).
pub fn secs(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64()
}

struct Opts {
    only: Vec<String>,
    json: bool,
    markdown: bool,
    reps: usize,
    scale: f64,
    python: bool,
    floor: bool,
    svg: Option<PathBuf>,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        only: vec![],
        json: false,
        markdown: false,
        reps: 5,
        scale: 1.0,
        python: true,
        floor: true,
        svg: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--only" => {
                o.only = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(String::from)
                    .collect()
            }
            "--json" => o.json = true,
            "--markdown" => o.markdown = true,
            "--reps" => o.reps = args.next().and_then(|s| s.parse().ok()).unwrap_or(5).max(1),
            "--scale" => o.scale = args.next().and_then(|s| s.parse().ok()).unwrap_or(1.0),
            "--no-python" => o.python = false,
            "--no-floor" => o.floor = false,
            "--svg" => o.svg = args.next().map(PathBuf::from),
            "--bench" => {}
            other => eprintln!("ignoring argument {other:?}"),
        }
    }
    o.only.retain(|s| !s.is_empty());
    o
}

/// `other` in `fig`'s unit scale.
fn convert(value: f64, from_unit: &str, fig: &Figure) -> f64 {
    value * Unit::base(from_unit) / Unit::base(fig.unit.text())
}

fn main() {
    // The C floor execs this program so to time what starting it costs
    // (`fork_exec_self_waitpid_us`, the floor of the spawn start method).
    if std::env::var_os("MULTIPROC_BENCH_EXIT_AT_ONCE").is_some() {
        return;
    }
    multiproc::init();
    let o = parse_args();
    let sections: Vec<&str> = SECTIONS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| o.only.is_empty() || o.only.iter().any(|s| s == n))
        .collect();
    let mut b = Bench {
        reps: o.reps,
        scale: o.scale,
        figures: vec![],
    };
    for (name, run) in SECTIONS {
        if sections.contains(name) {
            eprintln!("[multiproc: {name}]");
            run(&mut b);
        }
    }
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-compare");
    let _ = std::fs::create_dir_all(&out_dir);
    let baselines = baseline::Baselines::find(o.python, o.floor, &out_dir);
    // multiproc records the Value-under-its-lock figure in `shm`; CPython
    // and the floor record it in `lock`.
    let mut theirs = sections.clone();
    theirs.retain(|s| *s != "aio");
    if theirs.contains(&"shm") && !theirs.contains(&"lock") {
        theirs.push("lock");
    }
    // The manager's round trip is paired with the floor's socketpair round
    // trip, which the floor measures in `pipe`.
    let mut floor_sections = theirs.clone();
    if floor_sections.contains(&"manager") && !floor_sections.contains(&"pipe") {
        floor_sections.push("pipe");
    }
    let py = if theirs.is_empty() {
        baseline::Results::new()
    } else {
        baselines.python(&theirs, o.reps, o.scale)
    };
    let floor = if floor_sections.is_empty() {
        baseline::Results::new()
    } else {
        baselines.floor(&floor_sections, o.reps, o.scale)
    };
    let mut rows = vec![];

    let mut json = serde_json::Map::new();
    let mut md = vec![markdown::HEADER.to_string()];
    if !o.json {
        println!(
            "{:<46} {:>12} {:>12} {:>12} {:>9} {:>9}  unit",
            "figure", "multiproc", "python", "C floor", "speedup", "x floor"
        );
    }
    for fig in &b.figures {
        let pyv = py
            .get(fig.python.as_ref().unwrap_or(&fig.name))
            .map(|(v, u)| convert(*v, u, fig));
        let flv = fig
            .floor
            .as_ref()
            .and_then(|f| floor.get(f))
            .map(|(v, u)| convert(*v, u, fig));
        let ratio = |other: f64| {
            if fig.unit.lower_is_better() {
                other / fig.value
            } else {
                fig.value / other
            }
        };
        let speedup = pyv.map(ratio);
        // How many times the floor's cost this is (1.0 = at the floor).
        let vs_floor = flv.map(|f| 1.0 / ratio(f));
        let unit = fig.unit.text();
        let cell = |v: Option<f64>| v.map_or("–".to_string(), |v| markdown::value(v, unit));
        let cellx = |v: Option<f64>| v.map_or("–".to_string(), markdown::ratio);
        md.push(format!(
            "| {} | {} | {} | {} | {} | {} |",
            svg::label(&fig.name).replace('<', "&lt;"),
            markdown::value(fig.value, unit),
            cell(pyv),
            cell(flv),
            cellx(speedup),
            cellx(vs_floor)
        ));
        if speedup.is_some() || vs_floor.is_some() {
            rows.push(svg::Row {
                label: svg::label(&fig.name),
                speedup,
                vs_floor,
            });
        }
        if o.json {
            let mut e = serde_json::Map::new();
            e.insert("multiproc".into(), fig.value.into());
            e.insert(
                "python".into(),
                pyv.map_or(serde_json::Value::Null, Into::into),
            );
            e.insert("unit".into(), fig.unit.text().into());
            e.insert(
                "speedup".into(),
                speedup.map_or(serde_json::Value::Null, Into::into),
            );
            if let Some(f) = flv {
                e.insert("floor".into(), f.into());
                e.insert(
                    "floor_figure".into(),
                    fig.floor.clone().unwrap_or_default().into(),
                );
            }
            json.insert(fig.name.clone(), e.into());
        } else {
            let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
            let showx = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}x"));
            println!(
                "{:<46} {:>12.3} {:>12} {:>12} {:>9} {:>9}  {}",
                fig.name,
                fig.value,
                show(pyv),
                show(flv),
                showx(speedup),
                showx(vs_floor),
                fig.unit.text()
            );
        }
    }
    if o.markdown {
        println!("\n{}", md.join("\n"));
    }
    if o.json {
        println!("{}", serde_json::Value::Object(json));
    } else {
        println!("\nspeedup > 1: multiproc better than CPython; x floor: multiproc's cost in units of the C floor (1.00x = at the floor).");
    }
    if let Some(path) = &o.svg {
        let mut cmd = String::from("cargo bench --bench compare");
        if cfg!(feature = "tokio") {
            cmd.push_str(" --features tokio");
        }
        cmd.push_str(&format!(" -- --reps {} --svg {}", o.reps, path.display()));
        if !o.only.is_empty() {
            cmd.push_str(&format!(" --only {}", o.only.join(",")));
        }
        let subtitle = format!("{}; {}", subtitle(o.reps), baselines.versions());
        let footer = format!("made by: {cmd}");
        let text = svg::chart(&rows, &subtitle, &footer);
        match std::fs::write(path, text) {
            Ok(()) => eprintln!("chart written to {}", path.display()),
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
    }
}

/// When and where the figures were measured, for the chart.
fn subtitle(reps: usize) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_date((secs / 86_400) as i64);
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{y:04}-{m:02}-{d:02}, {cpus} CPUs, load average {load} at the end; medians of {reps} runs, all three measured in one run"
    )
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
