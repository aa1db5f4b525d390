//! A small blocking HTTP client for the lab's own tools and tests: health checks, scrapes,
//! profile downloads and Prometheus API queries, all on loopback.

use std::time::Duration;

use ureq::Agent;

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    /// The `Server-Timing` header, which task profiles send (empty without one).
    pub server_timing: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// GETs `url`, waiting at most `timeout` for the whole exchange. Error statuses are returned as
/// responses, not errors: callers check `status`.
pub fn get(url: &str, timeout: Duration) -> Result<Response, String> {
    let agent: Agent = Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut response = agent
        .get(url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let content_type = header("content-type");
    let server_timing = header("server-timing");
    let body = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    Ok(Response {
        status: response.status().as_u16(),
        content_type,
        server_timing,
        body,
    })
}

/// Sums the samples of `name` in Prometheus text exposition, over all label sets, or `None`
/// when there is no such series.
pub fn metric_value(exposition: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue; // a longer name with this prefix
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(value) = value {
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

/// The buckets of histogram `name` in Prometheus text exposition: `(le, cumulative count)` pairs
/// from the `NAME_bucket{...,le="X"}` series, summed over all other labels (as
/// `sum by (le) (NAME_bucket)` does) and sorted by bound, `+Inf` last. Empty when there is no
/// such histogram.
pub fn histogram_buckets(exposition: &str, name: &str) -> Vec<(f64, f64)> {
    let series = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(&series) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let bound = labels
            .split(',')
            .find_map(|pair| pair.trim().strip_prefix("le=\""))
            .and_then(|v| v.strip_suffix('"'))
            .and_then(|v| v.parse::<f64>().ok());
        let count = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok());
        let (Some(bound), Some(count)) = (bound, count) else {
            continue;
        };
        match buckets.iter_mut().find(|(le, _)| *le == bound) {
            Some((_, total)) => *total += count,
            None => buckets.push((bound, count)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_series_and_ignores_longer_names() {
        let text = "# HELP x\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3.5\nx_total_more 100\n";
        assert_eq!(metric_value(text, "x_total"), Some(5.5));
        assert_eq!(metric_value(text, "y"), None);
    }

    #[test]
    fn sums_histogram_buckets_by_bound() {
        let text = "h_bucket{op=\"a\",le=\"0.1\"} 1\nh_bucket{op=\"a\",le=\"+Inf\"} 3\n\
                    h_bucket{op=\"b\",le=\"0.1\"} 2\nh_bucket{op=\"b\",le=\"+Inf\"} 2\nh_sum 9\n";
        assert_eq!(
            histogram_buckets(text, "h"),
            vec![(0.1, 3.0), (f64::INFINITY, 5.0)]
        );
        assert!(histogram_buckets(text, "g").is_empty());
    }
}
