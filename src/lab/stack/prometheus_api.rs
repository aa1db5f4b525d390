//! The few calls of Prometheus' HTTP API the lab makes: is it ready, are its targets UP, what
//! does a query return, did the rules load. `lab demo` waits and measures with them; the
//! end-to-end tests assert with them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::client;

const TIMEOUT: Duration = Duration::from_secs(5);

/// One scrape target, from `/api/v1/targets`.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub job: String,
    pub scrape_url: String,
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: String,
    pub last_error: String,
}

impl Target {
    pub fn is_up(&self) -> bool {
        self.health == "up"
    }
}

/// One series of an instant query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// A rule group, from `/api/v1/rules`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleGroup {
    pub name: String,
    pub file: String,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    /// `alerting` or `recording`.
    pub kind: String,
    /// `ok`, `err` or `unknown` (not evaluated yet).
    pub health: String,
    pub last_error: String,
}

/// Whether Prometheus at `base` (e.g. `http://127.0.0.1:9092`) is ready to serve queries.
pub fn ready(base: &str) -> bool {
    client::get(&format!("{base}/-/ready"), TIMEOUT).is_ok_and(|r| r.status == 200)
}

/// A JSON string field, or empty when it is missing or not a string.
fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// The active scrape targets.
pub fn targets(base: &str) -> Result<Vec<Target>, String> {
    let data = api_get(base, "/api/v1/targets?state=active")?;
    Ok(data["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| Target {
            job: text(&t["labels"]["job"]),
            scrape_url: text(&t["scrapeUrl"]),
            health: text(&t["health"]),
            last_error: text(&t["lastError"]),
        })
        .collect())
}

/// Evaluates `expr` now. A scalar result is returned as one sample without labels.
pub fn query(base: &str, expr: &str) -> Result<Vec<Sample>, String> {
    let encoded: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    let data = api_get(base, &format!("/api/v1/query?query={encoded}"))
        .map_err(|e| format!("query {expr:?}: {e}"))?;
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("vector") => result
            .as_array()
            .into_iter()
            .flatten()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                Ok(Sample {
                    labels,
                    value: sample_value(&series["value"])?,
                })
            })
            .collect(),
        Some("scalar") => Ok(vec![Sample {
            labels: BTreeMap::new(),
            value: sample_value(result)?,
        }]),
        other => Err(format!("query {expr:?}: unexpected result type {other:?}")),
    }
}

/// The loaded rule groups and each rule's health.
pub fn rule_groups(base: &str) -> Result<Vec<RuleGroup>, String> {
    let data = api_get(base, "/api/v1/rules")?;
    Ok(data["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| RuleGroup {
            name: text(&g["name"]),
            file: text(&g["file"]),
            rules: g["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| Rule {
                    name: text(&r["name"]),
                    kind: text(&r["type"]),
                    health: text(&r["health"]),
                    last_error: text(&r["lastError"]),
                })
                .collect(),
        })
        .collect())
}

/// `[timestamp, "value"]`; Prometheus writes values as strings (`"NaN"`, `"+Inf"` included).
fn sample_value(pair: &Value) -> Result<f64, String> {
    pair[1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("unexpected sample {pair}"))
}

/// GETs an API path and returns its `data`, or the error Prometheus gave.
fn api_get(base: &str, path: &str) -> Result<Value, String> {
    let url = format!("{base}{path}");
    let response = client::get(&url, TIMEOUT)?;
    let body: Value = serde_json::from_slice(&response.body)
        .map_err(|e| format!("GET {url}: status {}, not JSON: {e}", response.status))?;
    if body["status"] != "success" {
        return Err(format!(
            "GET {url}: {} {}",
            body["errorType"].as_str().unwrap_or("error"),
            body["error"].as_str().unwrap_or("(no message)")
        ));
    }
    Ok(body["data"].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prometheus_sample_values() {
        let v: Value = serde_json::from_str(r#"[1700000000.1, "NaN"]"#).unwrap();
        assert!(sample_value(&v).unwrap().is_nan());
        let v: Value = serde_json::from_str(r#"[1700000000.1, "+Inf"]"#).unwrap();
        assert_eq!(sample_value(&v).unwrap(), f64::INFINITY);
        let v: Value = serde_json::from_str(r#"[1700000000.1, "2.5"]"#).unwrap();
        assert_eq!(sample_value(&v).unwrap(), 2.5);
    }
}
