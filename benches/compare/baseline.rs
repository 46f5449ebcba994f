//! The two baselines the harness compares against, both in this repository
//! under `benches/baseline/`: `bench_mp.py` (CPython's `multiprocessing`,
//! run with `python3`) and `limits.c` (the C floor, built with `cc`).
//!
//! Each writes `{"results": {figure: {"median": .., "unit": ..}}}`; a figure
//! is found by name. A missing tool leaves its column empty, said once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `{figure: (median, unit)}`.
pub type Results = BTreeMap<String, (f64, String)>;

/// What the baselines need to run.
pub struct Baselines {
    dir: PathBuf,
    out: PathBuf,
    python: Option<String>,
    cc: Option<String>,
}

/// Whether `program --version` runs.
fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Baselines {
    /// Finds the scripts next to this harness and the tools on `PATH`
    /// (`$PYTHON` and `$CC` override `python3` and `cc`). `want_*`: the
    /// columns asked for. Prints one line if a wanted tool is missing.
    pub fn find(want_python: bool, want_floor: bool, out: &Path) -> Baselines {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/baseline");
        let pick = |var: &str, default: &str| {
            let p = std::env::var(var).unwrap_or_else(|_| default.to_string());
            runs(&p).then_some(p)
        };
        let python = if want_python {
            pick("PYTHON", "python3")
        } else {
            None
        };
        let cc = if want_floor { pick("CC", "cc") } else { None };
        let mut missing = vec![];
        if want_python && python.is_none() {
            missing.push("python3 (the CPython column)");
        }
        if want_floor && cc.is_none() {
            missing.push("a C compiler `cc` (the C floor column)");
        }
        if !missing.is_empty() {
            eprintln!(
                "not found on PATH: {}; those columns stay empty.",
                missing.join(" and ")
            );
        }
        Baselines {
            dir,
            out: out.to_path_buf(),
            python,
            cc,
        }
    }

    /// "CPython 3.x.y" (or that it is missing), for the chart.
    pub fn versions(&self) -> String {
        let python = self.python.as_ref().and_then(|p| {
            let out = Command::new(p).arg("--version").output().ok()?;
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Some(text.replace("Python", "CPython"))
        });
        python.unwrap_or_else(|| "no CPython".into())
    }

    /// CPython's figures for `sections` (empty without `python3`).
    pub fn python(&self, sections: &[&str], reps: usize, scale: f64) -> Results {
        let Some(python) = &self.python else {
            return Results::new();
        };
        let script = self.dir.join("bench_mp.py");
        let out = self.out.join("python.json");
        eprintln!("[python] bench_mp.py --only {}", sections.join(","));
        let status = Command::new(python)
            .arg(&script)
            .args(["--only", &sections.join(",")])
            .args(["--reps", &reps.to_string(), "--scale", &scale.to_string()])
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => read_results(&out),
            Ok(s) => {
                eprintln!("(bench_mp.py failed: {s}; CPython column empty)");
                Results::new()
            }
            Err(e) => {
                eprintln!("({python} did not run: {e}; CPython column empty)");
                Results::new()
            }
        }
    }

    /// The C floor's figures for `sections` (empty without `cc`).
    pub fn floor(&self, sections: &[&str], reps: usize, scale: f64) -> Results {
        let Some(cc) = &self.cc else {
            return Results::new();
        };
        let limits = self.out.join("limits");
        let exit0 = self.out.join("exit0");
        let built = Command::new(cc)
            .args(["-O2", "-o"])
            .arg(&limits)
            .arg(self.dir.join("limits.c"))
            .args(["-lpthread", "-lrt"])
            .status()
            .is_ok_and(|s| s.success());
        if !built {
            eprintln!("({cc} could not build limits.c; C floor column empty)");
            return Results::new();
        }
        let static_ok = Command::new(cc)
            .args(["-O2", "-static", "-o"])
            .arg(&exit0)
            .arg(self.dir.join("exit0.c"))
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !static_ok && sections.contains(&"start") {
            eprintln!("({cc} -static failed (no static libc?): no fork+exec floor)");
        }
        let out = self.out.join("limits.json");
        eprintln!("[floor] limits --only {}", sections.join(","));
        let status = Command::new(&limits)
            .args(["--only", &sections.join(",")])
            .args(["--reps", &reps.max(3).to_string()])
            .args(["--scale", &scale.to_string()])
            .arg("--exit0")
            .arg(&exit0)
            .args(
                std::env::current_exe()
                    .ok()
                    .map(|me| ["--self".into(), me.into_os_string()])
                    .into_iter()
                    .flatten(),
            )
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => read_results(&out),
            _ => {
                eprintln!("(limits failed; C floor column empty)");
                Results::new()
            }
        }
    }
}

/// `{figure: (median, unit)}` from a baseline's JSON file.
fn read_results(path: &Path) -> Results {
    let mut out = Results::new();
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
