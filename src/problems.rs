//! Which of the lab's six problems `worker-bad` has: `--problems leak,capacity,churn,blocking,
//! contention,backlog` (env `LAB_PROBLEMS`), `all` (the default) or `none`.
//!
//! A teacher shows one problem at a time: `worker-bad --problems blocking` has only lesson 4's
//! problem and runs the fixed code of `optimized.rs` for every other section, so the dashboard
//! shows that one difference. `worker-optimized` has every fix whatever the flag says; it accepts
//! the flag (so `lab demo` and `lab compare` can pass the same flags to both) and says at start
//! that it ignores it.
//!
//! The workers compute the same digest for every task with any set of problems; the problems
//! change how the work is done, never what it computes (`tests/equivalence.rs`).

use std::fmt;

/// One of the lessons' problems, as `--problems` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Problem {
    /// Lesson 1: helper tasks with no way to exit.
    Leak,
    /// Lesson 2: collections that start empty, grow, and are thrown away per task.
    Capacity,
    /// Lesson 3: clones, formatting and label lookups in the hot path.
    Churn,
    /// Lesson 4: a long CPU-bound step on a runtime thread.
    Blocking,
    /// Lesson 5: a shared lock held across every task's work.
    Contention,
    /// Lesson 6: an unbounded queue, so overload turns into backlog instead of backpressure.
    Backlog,
}

impl Problem {
    pub const ALL: [Problem; 6] = [
        Problem::Leak,
        Problem::Capacity,
        Problem::Churn,
        Problem::Blocking,
        Problem::Contention,
        Problem::Backlog,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Problem::Leak => "leak",
            Problem::Capacity => "capacity",
            Problem::Churn => "churn",
            Problem::Blocking => "blocking",
            Problem::Contention => "contention",
            Problem::Backlog => "backlog",
        }
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Problems(u8);

impl Problems {
    /// Every problem: `worker-bad`'s default, so the dashboard shows all six lessons at once.
    pub const ALL: Problems = Problems(0b11_1111);
    /// No problem at all: `worker-bad` then runs the same code as `worker-optimized`.
    pub const NONE: Problems = Problems(0);

    pub fn has(self, problem: Problem) -> bool {
        self.0 & problem.bit() != 0
    }

    pub fn with(self, problem: Problem) -> Problems {
        Problems(self.0 | problem.bit())
    }

    /// Every subset, for tests that must hold with any set of problems.
    pub fn every_set() -> impl Iterator<Item = Problems> {
        (0..=Self::ALL.0).map(Problems)
    }

    /// From the bits of `bits` (one per problem, in `Problem::ALL` order); extra bits ignored.
    pub fn from_bits(bits: u8) -> Problems {
        Problems(bits & Self::ALL.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Problem> {
        Problem::ALL.into_iter().filter(move |&p| self.has(p))
    }

    /// Parses `--problems`: `all`, `none`, or a comma-separated list of problem names.
    pub fn parse(value: &str) -> Result<Problems, String> {
        let allowed = || {
            let names: Vec<&str> = Problem::ALL.iter().map(|p| p.name()).collect();
            format!(
                "expected all, none, or a comma-separated list of: {}",
                names.join(", ")
            )
        };
        crate::cli::refuse_spaces(value, &allowed())?;
        match value {
            "all" => return Ok(Problems::ALL),
            "none" => return Ok(Problems::NONE),
            "" => return Err(format!("empty list; {}", allowed())),
            _ => {}
        }
        let mut problems = Problems::NONE;
        for item in value.split(',') {
            let problem = match Problem::ALL.iter().find(|p| p.name() == item) {
                Some(&problem) => problem,
                None if item.is_empty() => {
                    return Err(format!("empty item in {value:?}; {}", allowed()));
                }
                None if item == "all" || item == "none" => {
                    return Err(format!(
                        "{item:?} stands alone and cannot be combined with other names; {}",
                        allowed()
                    ));
                }
                None => return Err(format!("unknown problem {item:?}; {}", allowed())),
            };
            if problems.has(problem) {
                return Err(format!("{item:?} is given more than once"));
            }
            problems = problems.with(problem);
        }
        Ok(problems)
    }
}

impl Default for Problems {
    fn default() -> Self {
        Problems::ALL
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Problems::ALL => f.write_str("all"),
            Problems::NONE => f.write_str("none"),
            problems => {
                let names: Vec<&str> = problems.iter().map(|p| p.name()).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_all_and_none() {
        assert_eq!(Problems::parse("all").unwrap(), Problems::ALL);
        assert_eq!(Problems::parse("none").unwrap(), Problems::NONE);
        let two = Problems::parse("blocking,backlog").unwrap();
        // Spaces are refused, as in every flag value: `"blocking, backlog"` was likely mistyped.
        assert!(Problems::parse("blocking, backlog").is_err());
        assert!(two.has(Problem::Blocking) && two.has(Problem::Backlog));
        assert!(!two.has(Problem::Leak));
        assert_eq!(two.to_string(), "blocking,backlog");
        for set in Problems::every_set() {
            assert_eq!(Problems::parse(&set.to_string()).unwrap(), set);
        }
    }

    #[test]
    fn bad_lists_name_the_value_and_what_is_allowed() {
        let err = Problems::parse("leak,blokcing").unwrap_err();
        assert!(
            err.contains("\"blokcing\"") && err.contains("leak, capacity"),
            "{err}"
        );
        assert!(Problems::parse("").unwrap_err().contains("empty list"));
        assert!(
            Problems::parse("leak,,churn")
                .unwrap_err()
                .contains("empty item")
        );
        assert!(
            Problems::parse("leak,leak")
                .unwrap_err()
                .contains("more than once")
        );
        assert!(
            Problems::parse("all,leak")
                .unwrap_err()
                .contains("stands alone")
        );
    }
}
