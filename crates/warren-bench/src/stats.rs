//! Latency summaries and the report table.

use std::time::Duration;

/// Latencies of one variant.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// What was measured.
    pub name: String,
    /// One duration per run.
    pub durations: Vec<Duration>,
}

impl Samples {
    /// No runs yet of what `name` says.
    pub fn new(name: impl Into<String>) -> Samples {
        Samples {
            name: name.into(),
            durations: Vec::new(),
        }
    }

    /// The `q` quantile (0..=1), nearest rank.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.durations.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    /// The median.
    pub fn median(&self) -> Duration {
        self.quantile(0.5)
    }

    /// The 99th percentile.
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// A Markdown table of latencies with each median's ratio to `baseline`'s.
pub fn latency_table(rows: &[Samples], baseline: &str) -> String {
    let base = rows
        .iter()
        .find(|r| r.name == baseline)
        .map(Samples::median)
        .unwrap_or(Duration::ZERO);
    let mut out = String::from(
        "| what | runs | median ms | p99 ms | median / baseline |\n|---|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let ratio = if base.is_zero() {
            f64::NAN
        } else {
            row.median().as_secs_f64() / base.as_secs_f64()
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.2}x |\n",
            row.name,
            row.durations.len(),
            ms(row.median()),
            ms(row.p99()),
            ratio
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(ms: &[u64]) -> Samples {
        Samples {
            name: "x".into(),
            durations: ms.iter().map(|&m| Duration::from_millis(m)).collect(),
        }
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let s = samples(&[5, 1, 3, 2, 4]);
        assert_eq!(s.median(), Duration::from_millis(3));
        assert_eq!(s.p99(), Duration::from_millis(5));
        assert_eq!(s.quantile(0.0), Duration::from_millis(1));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(samples(&hundred).p99(), Duration::from_millis(99));
        assert_eq!(samples(&[]).median(), Duration::ZERO);
    }

    #[test]
    fn table_has_ratios() {
        let mut a = samples(&[2, 2]);
        a.name = "base".into();
        let mut b = samples(&[6, 6]);
        b.name = "other".into();
        let table = latency_table(&[a, b], "base");
        assert!(
            table.contains("| base | 2 | 2.000 | 2.000 | 1.00x |"),
            "{table}"
        );
        assert!(
            table.contains("| other | 2 | 6.000 | 6.000 | 3.00x |"),
            "{table}"
        );
    }
}
