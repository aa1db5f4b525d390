//! The arithmetic behind the report: least-squares slopes and Prometheus's `histogram_quantile`.

/// Slope of the least-squares line through `points` (y per unit of x), or `None` with fewer than
/// two distinct x values.
///
/// A slope over every sample, rather than (last - first) / duration, is what Grafana's
/// `deriv()` panel shows, and one odd sample at either end cannot swing it.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for &(x, y) in points {
        sxy += (x - mean_x) * (y - mean_y);
        sxx += (x - mean_x) * (x - mean_x);
    }
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Per-bucket differences of two cumulative histograms (`(le, count)` sorted by bound), i.e.
/// the observations made between the two scrapes: `increase(NAME_bucket[...])`.
///
/// Bounds missing from `earlier` count as zero there, so a histogram that gained a bucket (it
/// cannot, but a scrape could come from a restarted worker) still gives a usable result.
pub fn bucket_increase(later: &[(f64, f64)], earlier: &[(f64, f64)]) -> Vec<(f64, f64)> {
    later
        .iter()
        .map(|&(le, count)| {
            let before = earlier
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, c)| *c);
            (le, (count - before).max(0.0))
        })
        .collect()
}

/// The `q` quantile (0 to 1) of a cumulative histogram, interpolated linearly inside the bucket
/// it falls in, exactly as PromQL's `histogram_quantile` does (`promql/quantile.go`):
///
/// - the lowest bucket is taken to start at 0 (if its bound is positive);
/// - a quantile in the `+Inf` bucket is the highest finite bound;
/// - no observations, or no `+Inf` bucket, gives no answer (Prometheus's NaN).
///
/// Using the same rule as the dashboard's p50/p95 panels keeps `lab compare`'s figures
/// comparable with what a learner sees in Grafana.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) || buckets.len() < 2 {
        return None;
    }
    let (last_bound, observations) = *buckets.last()?;
    if last_bound != f64::INFINITY || observations <= 0.0 {
        return None;
    }
    // Counts are cumulative; a scrape taken mid-update can be off by one, so keep them monotonic
    // as Prometheus does before searching.
    let mut counts: Vec<f64> = Vec::with_capacity(buckets.len());
    for &(_, count) in buckets {
        let floor = counts.last().copied().unwrap_or(0.0);
        counts.push(count.max(floor));
    }
    let rank = q * observations;
    let b = counts[..counts.len() - 1]
        .iter()
        .position(|&c| c >= rank)
        .unwrap_or(counts.len() - 1);
    if b == buckets.len() - 1 {
        return Some(buckets[buckets.len() - 2].0);
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return Some(buckets[0].0);
    }
    let bucket_end = buckets[b].0;
    let (bucket_start, count, rank) = if b > 0 {
        (
            buckets[b - 1].0,
            counts[b] - counts[b - 1],
            rank - counts[b - 1],
        )
    } else {
        (0.0, counts[0], rank)
    };
    if count <= 0.0 {
        return Some(bucket_start);
    }
    Some(bucket_start + (bucket_end - bucket_start) * (rank / count))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    #[test]
    fn slope_of_a_line_and_of_too_few_points() {
        let line: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 7.0)).collect();
        assert!((slope(&line).unwrap() - 3.0).abs() < 1e-12);
        assert_eq!(slope(&[(1.0, 2.0)]), None);
        assert_eq!(slope(&[(1.0, 2.0), (1.0, 5.0)]), None);
        assert_eq!(slope(&[(0.0, 5.0), (1.0, 5.0), (2.0, 5.0)]), Some(0.0));
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        // 10 observations <= 0.1, 10 more <= 0.2, none above.
        let buckets = [(0.1, 10.0), (0.2, 20.0), (INF, 20.0)];
        // rank 10 falls at the top of the first bucket.
        assert!((histogram_quantile(0.5, &buckets).unwrap() - 0.1).abs() < 1e-12);
        // rank 15: halfway through the second bucket.
        assert!((histogram_quantile(0.75, &buckets).unwrap() - 0.15).abs() < 1e-12);
        // rank 5: halfway through the first bucket, which starts at 0.
        assert!((histogram_quantile(0.25, &buckets).unwrap() - 0.05).abs() < 1e-12);
    }

    #[test]
    fn quantile_in_the_inf_bucket_is_the_highest_finite_bound() {
        let buckets = [(0.1, 1.0), (0.2, 2.0), (INF, 10.0)];
        assert_eq!(histogram_quantile(0.99, &buckets), Some(0.2));
    }

    #[test]
    fn no_observations_or_no_inf_bucket_gives_nothing() {
        assert_eq!(histogram_quantile(0.5, &[(0.1, 0.0), (INF, 0.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[(0.1, 1.0), (0.2, 2.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[]), None);
        assert_eq!(histogram_quantile(1.5, &[(0.1, 1.0), (INF, 1.0)]), None);
    }

    #[test]
    fn increase_between_two_scrapes() {
        let earlier = [(0.1, 4.0), (INF, 5.0)];
        let later = [(0.1, 10.0), (INF, 15.0)];
        assert_eq!(
            bucket_increase(&later, &earlier),
            vec![(0.1, 6.0), (INF, 10.0)]
        );
    }
}
