//! A small blocking HTTP client for the lab's own tools and tests: health checks, scrapes,
//! profile downloads and Prometheus API queries, all on loopback.

use std::time::Duration;

use ureq::Agent;

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
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
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    Ok(Response {
        status: response.status().as_u16(),
        content_type,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_series_and_ignores_longer_names() {
        let text = "# HELP x\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3.5\nx_total_more 100\n";
        assert_eq!(metric_value(text, "x_total"), Some(5.5));
        assert_eq!(metric_value(text, "y"), None);
    }
}
