//! The lab's own `-top`: flat and cumulative value per function from a pprof profile, printed
//! the way `go tool pprof -top` prints them, for machines without Go.
//!
//! flat is what a function spent (or allocated, or how many tasks wait) in itself: the sample's
//! leaf frame. cum adds everything it called: every sample with the function anywhere on its
//! stack, counted once per sample even if it recurses. Inlined functions are frames of their
//! own, as pprof shows them.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use pprof::protos::Profile;

/// One function's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub flat: i64,
    pub cum: i64,
}

/// A profile's rows, largest flat first.
#[derive(Debug, Clone)]
pub struct Top {
    /// `cpu`, `inuse_space`, `alloc_space`, `goroutine`.
    pub sample_type: String,
    /// `nanoseconds`, `bytes`, `count`.
    pub unit: String,
    pub total: i64,
    pub entries: Vec<Entry>,
}

/// Sums a profile per function, for the sample type `go tool pprof` shows by default (the
/// profile's `default_sample_type`, else the last one).
pub fn top(profile: &Profile) -> Result<Top, String> {
    let string = |i: i64| -> &str {
        profile
            .string_table
            .get(usize::try_from(i).unwrap_or(usize::MAX))
            .map_or("", String::as_str)
    };
    if profile.sample_type.is_empty() {
        return Err("the profile has no sample types".into());
    }
    let index = profile
        .sample_type
        .iter()
        .position(|t| profile.default_sample_type != 0 && t.ty == profile.default_sample_type)
        .unwrap_or(profile.sample_type.len() - 1);
    let value_type = &profile.sample_type[index];

    let functions: HashMap<u64, &str> = profile
        .function
        .iter()
        .map(|f| (f.id, string(f.name)))
        .collect();
    // Each location's frames, innermost (inlined) first, as names.
    let frames: HashMap<u64, Vec<String>> = profile
        .location
        .iter()
        .map(|loc| {
            let names: Vec<String> = loc
                .line
                .iter()
                .map(|line| match functions.get(&line.function_id) {
                    Some(name) if !name.is_empty() => (*name).to_owned(),
                    _ => format!("{:#x}", loc.address),
                })
                .collect();
            let names = if names.is_empty() {
                vec![format!("{:#x}", loc.address)]
            } else {
                names
            };
            (loc.id, names)
        })
        .collect();

    let mut flat: HashMap<&str, i64> = HashMap::new();
    let mut cum: HashMap<&str, i64> = HashMap::new();
    let mut total = 0i64;
    for sample in &profile.sample {
        let value = sample.value.get(index).copied().unwrap_or(0);
        if value == 0 {
            continue;
        }
        total += value;
        let mut stack = sample
            .location_id
            .iter()
            .filter_map(|id| frames.get(id))
            .flat_map(|names| names.iter().map(String::as_str));
        let Some(leaf) = stack.next() else { continue };
        *flat.entry(leaf).or_default() += value;
        let mut seen = HashSet::from([leaf]);
        *cum.entry(leaf).or_default() += value;
        for name in stack {
            if seen.insert(name) {
                *cum.entry(name).or_default() += value;
            }
        }
    }
    let mut entries: Vec<Entry> = cum
        .iter()
        .map(|(&name, &cum)| Entry {
            name: name.to_owned(),
            flat: flat.get(name).copied().unwrap_or(0),
            cum,
        })
        .collect();
    entries.sort_by(|a, b| {
        b.flat
            .cmp(&a.flat)
            .then(b.cum.cmp(&a.cum))
            .then(a.name.cmp(&b.name))
    });
    Ok(Top {
        sample_type: string(value_type.ty).to_owned(),
        unit: string(value_type.unit).to_owned(),
        total,
        entries,
    })
}

impl Top {
    /// Largest cum first, as `-top -cum` orders them.
    pub fn sort_by_cum(&mut self) {
        self.entries.sort_by(|a, b| {
            b.cum
                .cmp(&a.cum)
                .then(b.flat.cmp(&a.flat))
                .then(a.name.cmp(&b.name))
        });
    }
}

/// The first `n` rows as `go tool pprof -top` lays them out.
pub fn render(top: &Top, n: usize) -> String {
    let shown = &top.entries[..n.min(top.entries.len())];
    let shown_flat: i64 = shown.iter().map(|e| e.flat).sum();
    let percent = |v: i64| {
        if top.total == 0 {
            0.0
        } else {
            100.0 * v as f64 / top.total as f64
        }
    };
    let mut out = String::new();
    let _ = writeln!(out, "Type: {}", top.sample_type);
    let _ = writeln!(
        out,
        "Showing nodes accounting for {}, {:.2}% of {} total",
        amount(shown_flat, &top.unit),
        percent(shown_flat),
        amount(top.total, &top.unit)
    );
    if shown.len() < top.entries.len() {
        let _ = writeln!(
            out,
            "Showing top {} nodes out of {}",
            shown.len(),
            top.entries.len()
        );
    }
    let _ = writeln!(
        out,
        "{:>10} {:>6} {:>6} {:>10} {:>6}",
        "flat", "flat%", "sum%", "cum", "cum%"
    );
    let mut sum = 0;
    for entry in shown {
        sum += entry.flat;
        let _ = writeln!(
            out,
            "{:>10} {:>5.2}% {:>5.2}% {:>10} {:>5.2}%  {}",
            amount(entry.flat, &top.unit),
            percent(entry.flat),
            percent(sum),
            amount(entry.cum, &top.unit),
            percent(entry.cum),
            entry.name
        );
    }
    out
}

/// A value in pprof's style: `1.20s`, `350ms`, `1.50MB`, `512kB`, `42`.
pub fn amount(value: i64, unit: &str) -> String {
    let v = value as f64;
    let (scaled, suffix) = match unit {
        "nanoseconds" => {
            if v.abs() >= 1e9 {
                (v / 1e9, "s")
            } else if v.abs() >= 1e6 {
                (v / 1e6, "ms")
            } else if v.abs() >= 1e3 {
                (v / 1e3, "us")
            } else {
                (v, "ns")
            }
        }
        "bytes" => {
            const K: f64 = 1024.0;
            if v.abs() >= K * K * K {
                (v / (K * K * K), "GB")
            } else if v.abs() >= K * K {
                (v / (K * K), "MB")
            } else if v.abs() >= K {
                (v / K, "kB")
            } else {
                (v, "B")
            }
        }
        _ => return value.to_string(),
    };
    // pprof's ScaledLabel: two decimals, ".00" dropped, a bare 0 without unit.
    let text = format!("{scaled:.2}");
    let text = text.strip_suffix(".00").unwrap_or(&text);
    if text == "0" || text == "-0" {
        return "0".into();
    }
    format!("{text}{suffix}")
}

#[cfg(test)]
mod tests {
    use pprof::protos::{Function, Line, Location, Profile, Sample, ValueType};

    use super::*;

    /// main -> work -> (render inlined into work) ; main -> idle
    fn profile() -> Profile {
        let strings = [
            "",
            "samples",
            "count",
            "cpu",
            "nanoseconds",
            "main",
            "work",
            "render",
            "idle",
        ];
        let function = |id: u64, name: i64| Function {
            id,
            name,
            ..Default::default()
        };
        let line = |function_id: u64| Line {
            function_id,
            ..Default::default()
        };
        let location = |id: u64, lines: Vec<Line>| Location {
            id,
            line: lines,
            ..Default::default()
        };
        let sample = |stack: Vec<u64>, nanos: i64| Sample {
            location_id: stack,
            value: vec![nanos / 10_000_000, nanos],
            ..Default::default()
        };
        Profile {
            sample_type: vec![
                ValueType {
                    ty: 1,
                    unit: 2,
                    ..Default::default()
                },
                ValueType {
                    ty: 3,
                    unit: 4,
                    ..Default::default()
                },
            ],
            function: vec![
                function(1, 5),
                function(2, 6),
                function(3, 7),
                function(4, 8),
            ],
            location: vec![
                location(10, vec![line(1)]),
                // render inlined into work: innermost first.
                location(20, vec![line(3), line(2)]),
                location(30, vec![line(4)]),
            ],
            sample: vec![
                sample(vec![20, 10], 300_000_000),
                sample(vec![10], 100_000_000),
                sample(vec![30, 10], 600_000_000),
            ],
            string_table: strings.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn flat_is_the_leaf_and_cum_the_whole_stack() {
        let top = top(&profile()).unwrap();
        assert_eq!(
            (top.sample_type.as_str(), top.unit.as_str()),
            ("cpu", "nanoseconds")
        );
        assert_eq!(top.total, 1_000_000_000);
        let row = |name: &str| top.entries.iter().find(|e| e.name == name).unwrap().clone();
        assert_eq!(top.entries[0].name, "idle");
        assert_eq!(
            (row("idle").flat, row("idle").cum),
            (600_000_000, 600_000_000)
        );
        assert_eq!(
            (row("render").flat, row("render").cum),
            (300_000_000, 300_000_000)
        );
        // work called render (inlined): no flat of its own, all of render's in cum.
        assert_eq!((row("work").flat, row("work").cum), (0, 300_000_000));
        assert_eq!(
            (row("main").flat, row("main").cum),
            (100_000_000, 1_000_000_000)
        );
    }

    #[test]
    fn cum_order_puts_callers_first() {
        let mut top = top(&profile()).unwrap();
        top.sort_by_cum();
        let names: Vec<&str> = top.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["main", "idle", "render", "work"]);
    }

    #[test]
    fn renders_like_pprof() {
        let text = render(&top(&profile()).unwrap(), 2);
        assert!(text.starts_with("Type: cpu\n"), "{text}");
        assert!(
            text.contains("Showing nodes accounting for 900ms, 90.00% of 1s total"),
            "{text}"
        );
        assert!(text.contains("Showing top 2 nodes out of 4"), "{text}");
        assert!(
            text.contains("     600ms 60.00% 60.00%      600ms 60.00%  idle"),
            "{text}"
        );
    }

    #[test]
    fn amounts_in_pprof_units() {
        assert_eq!(amount(1_200_000_000, "nanoseconds"), "1.20s");
        assert_eq!(amount(10_000_000, "nanoseconds"), "10ms");
        assert_eq!(amount(0, "nanoseconds"), "0");
        assert_eq!(amount(1536 * 1024, "bytes"), "1.50MB");
        assert_eq!(amount(512, "bytes"), "512B");
        assert_eq!(amount(42, "count"), "42");
    }
}
