//! Removes `--problems` switches from `src/bad.rs`, keeping only the bad code: the learner's start
//! has every problem and no way to turn one off, so flipping a switch is not a way to "fix" a
//! lesson.
//!
//! bad.rs writes every switch one way (its header says so), and this is all that is recognised:
//! - `if self.has(Problem::X) {` BAD `} else {` FIXED `}` (also after `let v = `, `Ok(` or any
//!   other text, and with `} else if ...` arms): BAD stays, FIXED goes. In a free function the
//!   condition reads `problems.has(Problem::X)`.
//! - `if !self.has(Problem::X) ... {` FIXED `}`, with any further `&& ...` conditions: code that
//!   runs only without problem X goes entirely.
//! - The switches' plumbing goes too: the `problems` field and parameters, the items `has` and
//!   `with_problems`, fields documented as used "only without" a problem, and the imports left
//!   unused.
//!
//! A switch written any other way stays, and the test below fails on it.

/// `bad` without its switches.
pub fn strip(bad: &str) -> String {
    let mut lines: Vec<String> = bad.lines().map(str::to_owned).collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let view: Vec<&str> = lines.iter().map(String::as_str).collect();
        let line = view[i];
        let trimmed = line.trim_start();
        let indent = indent_of(line);
        if let Some((prefix, negated)) = switch_head(trimmed) {
            let close = closing(&view, i, indent);
            if negated {
                // Runs only without the problem: none of it is the learner's.
                i = close.map_or(i + 1, |c| end_of_chain(&view, c, indent) + 1);
                continue;
            }
            let Some(close) = close else {
                out.push(line.to_owned());
                i += 1;
                continue;
            };
            let end = end_of_chain(&view, close, indent);
            let suffix = view[end].trim_start().trim_start_matches('}');
            let kept = keep_bad(indent, prefix, &view[i + 1..close], suffix);
            // The bad branch is read again: it may hold switches or plumbing of its own.
            lines.splice(i..=end, kept);
            continue;
        }
        let lines = &view;
        if is_problems_plumbing_line(trimmed)
            || is_switch_item(trimmed)
            || is_fixed_only_field(lines, i)
        {
            i = item_end(lines, i) + 1;
            // The item's doc comment, already emitted, goes with it.
            while out
                .last()
                .is_some_and(|l| l.trim_start().starts_with("///"))
            {
                out.pop();
            }
        } else {
            out.push(strip_arguments(line));
            i += 1;
        }
    }
    let out = tidy(out);
    let out = prune_imports(out);
    let mut text = out.join("\n");
    text.push('\n');
    text
}

fn indent_of(line: &str) -> &str {
    &line[..line.len() - line.trim_start().len()]
}

/// `(text before "if", negated)` when `trimmed` opens a switch block.
fn switch_head(trimmed: &str) -> Option<(&str, bool)> {
    if trimmed.starts_with("//") {
        return None;
    }
    if !trimmed.ends_with('{') && !trimmed.ends_with("if") {
        // `if !self.has(..)\n && let ... \n{`: the head spans lines; its first line ends in `)`.
        if !trimmed.contains(".has(Problem::") {
            return None;
        }
    }
    for (pattern, negated) in [
        ("if !self.has(Problem::", true),
        ("if !problems.has(Problem::", true),
        ("if self.has(Problem::", false),
        ("if problems.has(Problem::", false),
    ] {
        if let Some(at) = trimmed.find(pattern) {
            return Some((&trimmed[..at], negated));
        }
    }
    None
}

/// The line closing the block opened at `open` (or by the `{` line after a multi-line head).
fn closing(lines: &[&str], open: usize, indent: &str) -> Option<usize> {
    (open + 1..lines.len()).find(|&j| {
        let line = lines[j];
        indent_of(line) == indent && line.trim_start().starts_with('}')
    })
}

/// Follows `} else {` / `} else if ... {` arms to the line that closes the last one.
fn end_of_chain(lines: &[&str], mut close: usize, indent: &str) -> usize {
    while lines[close].trim_start().starts_with("} else") {
        match closing(lines, close, indent) {
            Some(next) => close = next,
            None => break,
        }
    }
    close
}

/// The bad branch in place of the whole `if`: dedented one level; an expression keeps the text
/// around the `if` (`let trace_id = `, `Ok(`, `;`).
fn keep_bad(indent: &str, prefix: &str, body: &[&str], suffix: &str) -> Vec<String> {
    // A multi-line head (`if self.has(..)\n && ...\n {`) never guards the bad code in bad.rs.
    let body: Vec<&str> = body
        .iter()
        .copied()
        .skip_while(|l| l.trim_start().starts_with("&&") || l.trim() == "{")
        .collect();
    let dedent = |l: &str| l.strip_prefix("    ").unwrap_or(l).to_owned();
    if prefix.is_empty() && suffix.is_empty() {
        return body.iter().map(|l| dedent(l)).collect();
    }
    // `prefix` + the single expression the branch holds + `suffix`.
    let inner = format!("{indent}    ");
    let statements = body
        .iter()
        .filter(|l| indent_of(l) == inner && !l.trim_start().starts_with(['}', ')', ']']))
        .count();
    if statements == 1 && !body.is_empty() {
        let mut kept = vec![format!("{indent}{prefix}{}", body[0].trim_start())];
        kept.extend(body[1..].iter().map(|l| dedent(l)));
        if let Some(last) = kept.last_mut() {
            last.push_str(suffix);
        }
        return kept;
    }
    let mut kept = vec![format!("{indent}{prefix}{{")];
    kept.extend(body.iter().map(|l| (*l).to_owned()));
    kept.push(format!("{indent}}}{suffix}"));
    kept
}

/// The `problems` field, its initialisers and the parameter of multi-line signatures.
fn is_problems_plumbing_line(trimmed: &str) -> bool {
    matches!(
        trimmed,
        "problems: Problems," | "problems: Problems::ALL," | "problems,"
    )
}

/// `problems` passed along or taken as a parameter within a line.
fn strip_arguments(line: &str) -> String {
    line.replace(", problems: Problems)", ")")
        .replace(", self.problems)", ")")
        .replace(", Problems::ALL)", ")")
        .replace(", problems)", ")")
}

/// The switches' own items: `fn has` and `fn with_problems`.
fn is_switch_item(trimmed: &str) -> bool {
    ["fn has(", "pub fn with_problems("]
        .iter()
        .any(|start| trimmed.starts_with(start))
}

/// A field whose doc comment says it is used "only without" a problem.
fn is_fixed_only_field(lines: &[&str], at: usize) -> bool {
    let trimmed = lines[at].trim_start();
    if trimmed.starts_with("//") || !trimmed.ends_with(',') || !trimmed.contains(": ") {
        return false;
    }
    let mut doc = Vec::new();
    for line in lines[..at].iter().rev() {
        match line.trim_start().strip_prefix("///") {
            Some(text) => doc.push(text),
            None => break,
        }
    }
    !doc.is_empty() && doc.iter().any(|l| l.contains("only without `"))
}

/// The last line of the item starting at `at`: a one-line field, or a braced item.
fn item_end(lines: &[&str], at: usize) -> usize {
    if !lines[at].trim_end().ends_with('{') {
        return at;
    }
    closing(lines, at, indent_of(lines[at])).unwrap_or(at)
}

/// What rustfmt would leave: no blank line after `{` or before `}`, none doubled, `{}` for an
/// emptied block, a signature on one line when it fits.
fn tidy(lines: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut lines = lines.into_iter().peekable();
    while let Some(line) = lines.next() {
        if line.contains("fn ") && line.ends_with('(') {
            let mut parts = vec![line.clone()];
            while let Some(next) = lines.next_if(|l| !l.trim_start().starts_with(')')) {
                parts.push(next);
            }
            let close = lines.next().unwrap_or_default();
            let params: Vec<&str> = parts[1..]
                .iter()
                .map(|p| p.trim().trim_end_matches(','))
                .collect();
            let joined = format!("{line}{}{}", params.join(", "), close.trim_start());
            if joined.len() <= 100 {
                out.push(joined);
            } else {
                out.extend(parts);
                out.push(close);
            }
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            if out
                .last()
                .is_some_and(|l| l.trim().is_empty() || l.trim_end().ends_with('{'))
            {
                continue;
            }
        } else if trimmed.starts_with('}') {
            while out.last().is_some_and(|l| l.trim().is_empty()) {
                out.pop();
            }
            if let Some(last) = out.last_mut()
                && last.trim_end().ends_with('{')
                && trimmed == "}"
                && indent_of(last) == indent_of(&line)
            {
                last.push('}');
                continue;
            }
        }
        out.push(line);
    }
    out
}

/// Drops the names single-line `use` declarations bring in that nothing uses any more.
fn prune_imports(lines: Vec<String>) -> Vec<String> {
    let body: String = lines
        .iter()
        .filter(|l| !l.starts_with("use ") && !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect();
    let used = |name: &str, module: &str| -> bool {
        if name == "self" {
            return body.contains(&format!("{module}::"));
        }
        let is_ident = |c: char| c.is_alphanumeric() || c == '_';
        body.match_indices(name).any(|(at, _)| {
            let before = body[..at].chars().next_back();
            let after = body[at + name.len()..].chars().next();
            !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
        })
    };
    lines
        .into_iter()
        .filter_map(|line| {
            let Some(path) = line.strip_prefix("use ").and_then(|l| l.strip_suffix(';')) else {
                return Some(line);
            };
            let (base, names) = match path.split_once("::{") {
                Some((base, names)) => (base, names.trim_end_matches('}')),
                None => match path.rsplit_once("::") {
                    Some((base, name)) => (base, name),
                    None => return Some(line),
                },
            };
            let module = base.rsplit("::").next().unwrap_or(base);
            let kept: Vec<&str> = names
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .filter(|n| used(n.rsplit(' ').next().unwrap_or(n), module))
                .collect();
            match kept.as_slice() {
                [] => None,
                ["self"] => Some(format!("use {base};")),
                [one] => Some(format!("use {base}::{one};")),
                more => Some(format!("use {base}::{{{}}};", more.join(", "))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD: &str = include_str!("../../bad.rs");

    #[test]
    fn no_switch_or_fixed_code_is_left() {
        // Code only: comments may name the reference (`must agree with optimized::process`).
        let stripped = strip(BAD);
        let body: Vec<&str> = stripped
            .lines()
            .filter(|l| !l.trim_start().starts_with("//") && !l.starts_with("use "))
            .collect();
        for (n, line) in body.iter().enumerate() {
            for word in ["Problem", "problems", "optimized::", "fn has("] {
                assert!(
                    !line.contains(word),
                    "`{word}` left in the stripped bad.rs, line {n}: {line}\n{stripped}"
                );
            }
        }
    }

    #[test]
    fn both_forms_of_a_switch() {
        let text = "fn f() {\n    \
                    if self.has(Problem::Churn) {\n        bad();\n    } else {\n        \
                    fixed();\n    }\n    \
                    if !self.has(Problem::Leak) {\n        return fixed();\n    }\n    \
                    let x = if problems.has(Problem::Capacity) {\n        Vec::new()\n    \
                    } else {\n        Vec::with_capacity(9)\n    };\n    x\n}\n";
        assert_eq!(
            strip(text),
            "fn f() {\n    bad();\n    let x = Vec::new();\n    x\n}\n"
        );
    }
}
