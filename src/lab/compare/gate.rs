//! `--fail-if`: thresholds on the report that turn `lab compare` into a regression gate.
//!
//! An expression is `SUBJECT.METRIC OP NUMBER`: `optimized.allocations_per_task>0`,
//! `ratio.bytes_per_task<10`, `bad.live_tasks_slope<=0`. SUBJECT is `bad`, `optimized` or
//! `ratio` (bad / optimized); METRIC is a key of the JSON report, in the unit the JSON uses;
//! OP is one of `<`, `<=`, `>`, `>=`, `==`, `!=`. The run fails when an expression holds, or
//! when the run has no value for it (no tasks processed, a 0/0 ratio): a gate that cannot
//! check must not pass.

use std::fmt;

use super::report::{Figures, Metric, Report, ThresholdResult};

/// Whose figure a threshold reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Bad,
    Optimized,
    Ratio,
}

impl Subject {
    const ALL: [(&'static str, Subject); 3] = [
        ("bad", Subject::Bad),
        ("optimized", Subject::Optimized),
        ("ratio", Subject::Ratio),
    ];

    fn figures(self, report: &Report) -> &Figures {
        match self {
            Subject::Bad => &report.bad,
            Subject::Optimized => &report.optimized,
            Subject::Ratio => &report.ratio,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    /// Two-character operators first, so `<=` is not read as `<` followed by `=0`.
    const ALL: [(&'static str, Op); 6] = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];

    fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Op::Lt => left < right,
            Op::Le => left <= right,
            Op::Gt => left > right,
            Op::Ge => left >= right,
            Op::Eq => left == right,
            Op::Ne => left != right,
        }
    }
}

/// One parsed `--fail-if` expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub subject: Subject,
    pub metric: Metric,
    pub op: Op,
    pub limit: f64,
    /// As the user wrote it, for messages.
    pub text: String,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What `--fail-if` accepts, for error messages and `--help`.
pub fn syntax_help() -> String {
    let metrics: Vec<&str> = Metric::ALL.iter().map(|m| m.key()).collect();
    format!(
        "expected SUBJECT.METRIC OP NUMBER, e.g. optimized.allocations_per_task>0; \
         SUBJECT is bad, optimized or ratio; OP is one of < <= > >= == !=; \
         METRIC is one of {}",
        metrics.join(", ")
    )
}

impl Threshold {
    /// Parses an expression; the error names what is wrong and what is allowed. Used as clap's
    /// value parser, so a malformed expression stops the command (status 2) before any worker
    /// starts.
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let fail = |why: String| Err(format!("{why}; {}", syntax_help()));
        let Some(op_at) = compact.find(['<', '>', '=', '!']) else {
            return fail(format!("no comparison operator in {text:?}"));
        };
        let (left, rest) = compact.split_at(op_at);
        let Some(&(op_text, op)) = Op::ALL.iter().find(|(o, _)| rest.starts_with(o)) else {
            return fail(format!("unknown operator in {text:?}"));
        };
        let number = &rest[op_text.len()..];
        let Some((subject, metric)) = left.split_once('.') else {
            return fail(format!(
                "{left:?} in {text:?} is not SUBJECT.METRIC (bad., optimized. or ratio.)"
            ));
        };
        let Some(&(_, subject)) = Subject::ALL.iter().find(|(name, _)| *name == subject) else {
            return fail(format!("unknown subject {subject:?} in {text:?}"));
        };
        let Some(metric) = Metric::from_key(metric) else {
            return fail(format!("unknown metric {metric:?} in {text:?}"));
        };
        let limit = match number.parse::<f64>() {
            Ok(limit) if limit.is_finite() => limit,
            _ => return fail(format!("{number:?} in {text:?} is not a number")),
        };
        Ok(Threshold {
            subject,
            metric,
            op,
            limit,
            text: text.trim().to_owned(),
        })
    }

    /// Checks the threshold against a report.
    pub fn check(&self, report: &Report) -> ThresholdResult {
        let value = self.subject.figures(report).get(self.metric);
        ThresholdResult {
            expression: self.text.clone(),
            value,
            failed: value.is_none_or(|v| self.op.holds(v, self.limit)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_operator_and_spaces() {
        for (text, op) in [
            ("bad.live_tasks_slope>0", Op::Gt),
            ("bad.live_tasks_slope >= 0", Op::Ge),
            ("optimized.allocations_per_task<1e-3", Op::Lt),
            ("ratio.bytes_per_task <= 10", Op::Le),
            ("ratio.throughput==1", Op::Eq),
            ("ratio.throughput != 1", Op::Ne),
        ] {
            let t = Threshold::parse(text).unwrap();
            assert_eq!(t.op, op, "{text}");
        }
        let t = Threshold::parse(" ratio.bytes_per_task < 10 ").unwrap();
        assert_eq!(t.subject, Subject::Ratio);
        assert_eq!(t.metric, Metric::BytesPerTask);
        assert_eq!(t.limit, 10.0);
    }

    #[test]
    fn lessons_4_to_6_have_subjects() {
        for (text, metric) in [
            ("ratio.poll_time_p99<10", Metric::PollTimeP99),
            ("bad.poll_time_max<0.001", Metric::PollTimeMax),
            ("ratio.metrics_latency_p99 < 2", Metric::MetricsLatencyP99),
            ("optimized.task_latency_p99>0.1", Metric::TaskLatencyP99),
            ("optimized.lock_wait_per_task>0", Metric::LockWaitPerTask),
            ("optimized.queue_depth_max>100", Metric::QueueDepthMax),
            ("ratio.queue_delay_p99<10", Metric::QueueDelayP99),
            ("optimized.tasks_rejected==0", Metric::TasksRejected),
        ] {
            let t = Threshold::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(t.metric, metric, "{text}");
        }
        let help = syntax_help();
        for key in ["poll_time_p99", "lock_wait_per_task", "queue_delay_p99"] {
            assert!(help.contains(key), "{help}");
        }
    }

    /// A gate on a lesson figure the workers do not serve (a build without lessons 4-6) fails
    /// rather than passing unchecked.
    #[test]
    fn a_lesson_threshold_without_the_lesson_metrics_fails() {
        use super::super::report::{ExitSummaries, Settings};
        use super::super::sample::Sample;
        let settings = Settings {
            warmup_seconds: 0.0,
            duration_seconds: 1.0,
            interval_seconds: 1.0,
            rate: 1,
            data_size: 1,
            tasks: 1,
            workers: 1,
            seed: 0,
        };
        let text = "\
worker_active_goroutines 1
worker_allocated_memory_bytes 1
worker_resident_memory_bytes 1
worker_total_allocations_bytes 1
worker_allocations_total 1
worker_task_allocations_total 1
worker_task_allocated_bytes_total 1
worker_tasks_processed_total 1
worker_task_errors_total 0
worker_gc_runs_total 0
worker_tasks_in_queue 0
process_cpu_seconds_total 0
worker_task_processing_duration_seconds_bucket{le=\"+Inf\"} 1
";
        let samples = [
            Sample::parse(0.0, text).unwrap(),
            Sample::parse(1.0, text).unwrap(),
        ];
        let summaries = ExitSummaries {
            bad: String::new(),
            optimized: String::new(),
        };
        let report = Report::new(settings, &samples, &samples, summaries);
        let held = Threshold::parse("optimized.lock_wait_per_task>0")
            .unwrap()
            .check(&report);
        assert!(held.failed && held.value.is_none(), "{held:?}");
        // The queue gauge is served by every worker: its gate checks a real value.
        let depth = Threshold::parse("optimized.queue_depth_max>100")
            .unwrap()
            .check(&report);
        assert_eq!((depth.failed, depth.value), (false, Some(0.0)));
    }

    #[test]
    fn a_threshold_without_a_value_fails() {
        use super::super::report::{ExitSummaries, Settings};
        let settings = Settings {
            warmup_seconds: 0.0,
            duration_seconds: 1.0,
            interval_seconds: 1.0,
            rate: 1,
            data_size: 1,
            tasks: 1,
            workers: 1,
            seed: 0,
        };
        let summaries = ExitSummaries {
            bad: String::new(),
            optimized: String::new(),
        };
        // No samples, so no figures at all.
        let report = Report::new(settings, &[], &[], summaries);
        let result = Threshold::parse("optimized.throughput<0")
            .unwrap()
            .check(&report);
        assert!(result.failed && result.value.is_none());
    }

    #[test]
    fn errors_name_the_expression_and_what_is_allowed() {
        for (text, why) in [
            ("bad.live_tasks_slope", "no comparison operator"),
            ("worst.throughput>1", "unknown subject \"worst\""),
            ("bad.speed>1", "unknown metric \"speed\""),
            ("bad.throughput>fast", "\"fast\""),
            ("throughput>1", "is not SUBJECT.METRIC"),
            ("bad.throughput=>1", "unknown operator"),
            ("bad.throughput>inf", "is not a number"),
        ] {
            let err = Threshold::parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
            assert!(
                err.contains("allocations_per_task") && err.contains("<="),
                "{err}"
            );
        }
    }
}
