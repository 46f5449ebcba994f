//! `--markdown`: the comparison as the table README.md shows.

/// `v` with three significant digits (no exponent).
fn sig3(v: f64) -> String {
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else if v.abs() >= 1.0 {
        2
    } else {
        3
    };
    format!("{v:.digits$}")
}

/// A figure in its unit, for people: `0.436 ms`, `46.4 µs`, `4.94M items/s`.
pub fn value(v: f64, unit: &str) -> String {
    let per = unit.split('/').next().unwrap_or(unit);
    if unit.starts_with("ms") {
        format!("{} ms", sig3(v))
    } else if unit.starts_with("us") {
        format!("{} µs", sig3(v))
    } else if unit == "MB/s" {
        format!("{v:.0} MB/s")
    } else if unit.starts_with('x') {
        format!("{}x", sig3(v))
    } else if v >= 1e6 {
        format!("{}M {per}/s", sig3(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k {per}/s", sig3(v / 1e3))
    } else {
        format!("{} {per}/s", sig3(v))
    }
}

/// A ratio: `13.1x`.
pub fn ratio(v: f64) -> String {
    if v < 1.0 {
        format!("{v:.2}x")
    } else {
        format!("{}x", sig3(v))
    }
}

/// The table's header.
pub const HEADER: &str = "| figure | multiproc | CPython | C floor | speedup vs CPython | cost vs floor |\n|---|---|---|---|---|---|";
