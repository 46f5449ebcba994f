//! multiproc against CPython `multiprocessing` and the C floor, in one run.
//!
//! ```text
//! cargo bench --bench compare                      # every section, a table
//! cargo bench --bench compare -- --only start,pipe # some sections
//! cargo bench --bench compare -- --json            # one JSON object
//! cargo bench --bench compare -- --reps 3 --scale 0.2 --no-python --no-floor
//! ```
//!
//! Sections carry `bench_mp.py`'s names. Each multiproc figure has the name of
//! the CPython figure it compares with; `speedup` > 1 means multiproc is
//! better (python/multiproc for times, multiproc/python for rates). Figures
//! paired with the C floor (`limits.c`, built here with `cc`) add `floor`.
//! The anchors are found in `$MULTIPROC_ANCHORS`, else `../shared/anchors`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod lock;
mod manager;
mod pipe;
mod pool;
mod queue;
mod shm;
mod start;

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
    reps: usize,
    scale: f64,
    python: bool,
    floor: bool,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        only: vec![],
        json: false,
        reps: 5,
        scale: 1.0,
        python: true,
        floor: true,
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
            "--reps" => o.reps = args.next().and_then(|s| s.parse().ok()).unwrap_or(5).max(1),
            "--scale" => o.scale = args.next().and_then(|s| s.parse().ok()).unwrap_or(1.0),
            "--no-python" => o.python = false,
            "--no-floor" => o.floor = false,
            "--bench" => {}
            other => eprintln!("ignoring argument {other:?}"),
        }
    }
    o.only.retain(|s| !s.is_empty());
    o
}

fn anchors_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MULTIPROC_ANCHORS") {
        return d.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/anchors")
}

/// `{name: (median, unit)}` from a bench_mp.py / limits JSON file.
fn read_results(path: &Path) -> BTreeMap<String, (f64, String)> {
    let mut out = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return out;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return out;
    };
    if let Some(obj) = v.get("results").and_then(|r| r.as_object()) {
        for (k, r) in obj {
            if let (Some(m), Some(u)) = (
                r.get("median").and_then(|m| m.as_f64()),
                r.get("unit").and_then(|u| u.as_str()),
            ) {
                out.insert(k.clone(), (m, u.to_string()));
            }
        }
    }
    out
}

fn run_python(sections: &[&str], o: &Opts, out_dir: &Path) -> BTreeMap<String, (f64, String)> {
    let script = anchors_dir().join("bench_mp.py");
    if !script.exists() {
        eprintln!("(no {}: CPython figures skipped)", script.display());
        return BTreeMap::new();
    }
    let out = out_dir.join("python.json");
    eprintln!(
        "[python] {} --only {}",
        script.display(),
        sections.join(",")
    );
    let st = Command::new("python3")
        .arg(&script)
        .args([
            "--only",
            &sections.join(","),
            "--reps",
            &o.reps.to_string(),
            "--scale",
            &o.scale.to_string(),
        ])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status();
    match st {
        Ok(s) if s.success() => read_results(&out),
        Ok(s) => {
            eprintln!("(bench_mp.py failed: {s}; CPython figures skipped)");
            BTreeMap::new()
        }
        Err(e) => {
            eprintln!("(python3 not runnable: {e}; CPython figures skipped)");
            BTreeMap::new()
        }
    }
}

fn run_floor(sections: &[&str], o: &Opts, out_dir: &Path) -> BTreeMap<String, (f64, String)> {
    let src = anchors_dir().join("limits.c");
    if !src.exists() {
        eprintln!("(no {}: C floor skipped)", src.display());
        return BTreeMap::new();
    }
    let bin = out_dir.join("limits");
    let tiny = out_dir.join("true_static");
    let ok = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .args(["-lpthread", "-lrt"])
        .status()
        .is_ok_and(|s| s.success());
    let _ = Command::new("cc")
        .args(["-O2", "-static", "-DTINY_TRUE", "-o"])
        .arg(&tiny)
        .arg(&src)
        .status();
    if !ok {
        eprintln!("(cc could not build limits.c: C floor skipped)");
        return BTreeMap::new();
    }
    let out = out_dir.join("limits.json");
    eprintln!("[floor] limits --only {}", sections.join(","));
    let st = Command::new(&bin)
        .current_dir(out_dir)
        .args([
            "--only",
            &sections.join(","),
            "--reps",
            &o.reps.max(3).to_string(),
            "--out",
        ])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status();
    match st {
        Ok(s) if s.success() => read_results(&out),
        _ => {
            eprintln!("(limits failed: C floor skipped)");
            BTreeMap::new()
        }
    }
}

/// `other` in `fig`'s unit scale.
fn convert(value: f64, from_unit: &str, fig: &Figure) -> f64 {
    value * Unit::base(from_unit) / Unit::base(fig.unit.text())
}

fn main() {
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
    let py = if o.python {
        run_python(&sections, &o, &out_dir)
    } else {
        BTreeMap::new()
    };
    let floor = if o.floor {
        run_floor(&sections, &o, &out_dir)
    } else {
        BTreeMap::new()
    };

    let mut json = serde_json::Map::new();
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
    if o.json {
        println!("{}", serde_json::Value::Object(json));
    } else {
        println!("\nspeedup > 1: multiproc better than CPython; x floor: multiproc's cost in units of the C floor (1.00x = at the floor).");
    }
}
