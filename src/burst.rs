//! Burst mode, for lesson 6 (overload): `--burst FACTORx[:ON/EVERY]` (env `LAB_BURST`)
//! multiplies the producer's `--rate` by FACTOR for ON out of every EVERY, e.g. `--burst
//! 20x:10s/30s` produces at 20 times the rate from 20 s to 30 s, 50 s to 60 s, and so on.
//! ON and EVERY default to 10s and 30s, so `--burst 20x` shows a burst within the first 30 s.
//!
//! A burst only overloads a worker when FACTOR x `--rate` is above what the worker can handle:
//! its capacity, which depends on the machine, `--data-size` and the runtime's threads. Run a
//! worker flat out (`--rate 1000000`) and read `rate(worker_tasks_processed_total[30s])` to
//! know it. Both workers take the flag and see the same offered load; what differs is how
//! their queue copes (`pool.rs`).

use std::fmt;
use std::time::Duration;

/// Default length of a burst.
const DEFAULT_ON: Duration = Duration::from_secs(10);
/// Default period between the starts of two bursts.
const DEFAULT_EVERY: Duration = Duration::from_secs(30);
/// Largest factor accepted; the burst rate must also stay within `--rate`'s range.
pub const MAX_FACTOR: u32 = 1000;

/// A periodic burst of load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    /// The rate is multiplied by this during a burst (at least 2).
    pub factor: u32,
    /// How long each burst lasts.
    pub on: Duration,
    /// Time from the start of one burst to the start of the next (longer than `on`).
    pub every: Duration,
}

impl Burst {
    /// Parses `FACTORx`, `FACTORx:ON/EVERY` or `off`/`none` (no burst).
    pub fn parse(value: &str) -> Result<Option<Burst>, String> {
        const FORMAT: &str = "expected FACTORx[:ON/EVERY] such as 20x or 20x:10s/30s \
                              (the rate times FACTOR for ON out of every EVERY), or off";
        crate::cli::refuse_spaces(value, FORMAT)?;
        if value == "off" || value == "none" {
            return Ok(None);
        }
        let (factor, window) = match value.split_once(':') {
            Some((factor, window)) => (factor, Some(window)),
            None => (value, None),
        };
        let factor = factor
            .strip_suffix('x')
            .ok_or_else(|| format!("the factor {factor:?} lacks its x; {FORMAT}"))?;
        let factor: u32 = match factor.parse() {
            Ok(factor) => factor,
            // Negative, or too large for any rate: out of range rather than "not a number".
            Err(_)
                if factor
                    .strip_prefix('-')
                    .unwrap_or(factor)
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    && !factor.is_empty() =>
            {
                return Err(format!(
                    "the factor {factor}x must be from 2x to {MAX_FACTOR}x; {FORMAT}"
                ));
            }
            Err(_) => {
                return Err(format!(
                    "the factor {factor:?} is not a whole number; {FORMAT}"
                ));
            }
        };
        if !(2..=MAX_FACTOR).contains(&factor) {
            return Err(format!(
                "the factor {factor}x must be from 2x to {MAX_FACTOR}x; {FORMAT}"
            ));
        }
        let (on, every) = match window {
            None => (DEFAULT_ON, DEFAULT_EVERY),
            Some(window) => {
                let (on, every) = window
                    .split_once('/')
                    .ok_or_else(|| format!("the window {window:?} lacks ON/EVERY; {FORMAT}"))?;
                let duration = |what: &str, text: &str| {
                    humantime::parse_duration(text)
                        .map_err(|e| format!("{what} {text:?}: {e}; {FORMAT}"))
                };
                (duration("ON", on)?, duration("EVERY", every)?)
            }
        };
        if on < Duration::from_secs(1) {
            return Err(format!(
                "a burst must last at least 1s, not {}; {FORMAT}",
                humantime::format_duration(on)
            ));
        }
        if every <= on || every > Duration::from_secs(24 * 3600) {
            return Err(format!(
                "EVERY ({}) must be longer than ON ({}) and at most 24h; {FORMAT}",
                humantime::format_duration(every),
                humantime::format_duration(on)
            ));
        }
        Ok(Some(Burst { factor, on, every }))
    }

    /// Whether a burst is under way `elapsed` after the start. Each period starts calm and
    /// ends with its burst, so the workers warm up before the first one.
    pub fn active(&self, elapsed: Duration) -> bool {
        let into_period = elapsed.as_nanos() % self.every.as_nanos();
        into_period >= (self.every - self.on).as_nanos()
    }

    /// The producer's rate `elapsed` after the start, for a base rate of `rate` tasks/s.
    pub fn rate_at(this: Option<&Burst>, rate: u32, elapsed: Duration) -> f64 {
        match this {
            Some(burst) if burst.active(elapsed) => f64::from(rate) * f64::from(burst.factor),
            _ => f64::from(rate),
        }
    }
}

impl fmt::Display for Burst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}x:{}/{}",
            self.factor,
            crate::cli::format_duration(self.on),
            crate::cli::format_duration(self.every)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_factor_and_window() {
        let burst = Burst::parse("20x:5s/1m").unwrap().unwrap();
        assert_eq!(burst.factor, 20);
        assert_eq!(burst.on, Duration::from_secs(5));
        assert_eq!(burst.every, Duration::from_secs(60));
        assert_eq!(Burst::parse("off").unwrap(), None);
        let default = Burst::parse("3x").unwrap().unwrap();
        assert_eq!((default.on, default.every), (DEFAULT_ON, DEFAULT_EVERY));
        assert_eq!(Burst::parse(&burst.to_string()).unwrap(), Some(burst));
    }

    #[test]
    fn bursts_end_each_period() {
        let burst = Burst::parse("4x:10s/30s").unwrap().unwrap();
        let at = |s| Burst::rate_at(Some(&burst), 100, Duration::from_secs(s));
        assert_eq!(at(0), 100.0);
        assert_eq!(at(19), 100.0);
        assert_eq!(at(20), 400.0);
        assert_eq!(at(29), 400.0);
        assert_eq!(at(30), 100.0);
        assert_eq!(at(55), 400.0);
        assert_eq!(Burst::rate_at(None, 100, Duration::from_secs(25)), 100.0);
    }

    #[test]
    fn bad_bursts_say_what_is_wrong() {
        for (value, expected) in [
            ("20", "lacks its x"),
            ("x", "not a whole number"),
            ("1x", "from 2x"),
            ("2000x", "to 1000x"),
            ("2x:10s", "lacks ON/EVERY"),
            ("2x:10q/30s", "ON \"10q\""),
            ("2x:30s/10s", "must be longer than ON"),
            ("2x:500ms/10s", "at least 1s"),
        ] {
            let err = Burst::parse(value).unwrap_err();
            assert!(err.contains(expected), "{value}: {err}");
            assert!(err.contains("FACTORx[:ON/EVERY]"), "{value}: {err}");
        }
    }
}
