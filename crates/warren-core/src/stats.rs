//! Resource statistics sampled during a run, and their decimation to a bounded number of points.

use serde::{Deserialize, Serialize};

/// One sample of a run's resource use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatSample {
    /// Milliseconds since the run started.
    pub t_ms: u64,
    /// Memory in use by the tree, in bytes.
    pub memory_bytes: u64,
    /// CPU time used so far (user + system), in milliseconds.
    pub cpu_ms: u64,
    /// Processes alive.
    pub pids: u64,
    /// Bytes read from block devices so far (0 where the host does not account IO).
    pub io_read_bytes: u64,
    /// Bytes written to block devices so far.
    pub io_write_bytes: u64,
}

/// Reduces `samples` (in time order) to at most `max_points` by cutting the time they span into
/// equal windows and averaging the samples in each; empty windows produce no point.
///
/// Keeps the shape of the series at any run length, the way Fn's `Decimate` does.
pub fn decimate(samples: &[StatSample], max_points: usize) -> Vec<StatSample> {
    if samples.len() <= max_points {
        return samples.to_vec();
    }
    if max_points == 0 {
        return Vec::new();
    }
    let first = samples[0].t_ms;
    let span = samples[samples.len() - 1].t_ms.saturating_sub(first) + 1;
    let mut out = Vec::with_capacity(max_points);
    let mut window = 0usize;
    let mut acc = Accumulator::default();
    for sample in samples {
        let index = ((sample.t_ms - first) as u128 * max_points as u128 / span as u128) as usize;
        let index = index.min(max_points - 1);
        if index != window && acc.count > 0 {
            out.push(acc.mean());
            acc = Accumulator::default();
        }
        window = index;
        acc.add(sample);
    }
    if acc.count > 0 {
        out.push(acc.mean());
    }
    out
}

#[derive(Default)]
struct Accumulator {
    count: u128,
    sum: [u128; 6],
}

impl Accumulator {
    fn add(&mut self, s: &StatSample) {
        self.count += 1;
        let values = [
            s.t_ms,
            s.memory_bytes,
            s.cpu_ms,
            s.pids,
            s.io_read_bytes,
            s.io_write_bytes,
        ];
        for (sum, value) in self.sum.iter_mut().zip(values) {
            *sum += value as u128;
        }
    }

    fn mean(&self) -> StatSample {
        let m = |i: usize| (self.sum[i] / self.count) as u64;
        StatSample {
            t_ms: m(0),
            memory_bytes: m(1),
            cpu_ms: m(2),
            pids: m(3),
            io_read_bytes: m(4),
            io_write_bytes: m(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: &[(u64, u64)]) -> Vec<StatSample> {
        points
            .iter()
            .map(|&(t_ms, memory_bytes)| StatSample {
                t_ms,
                memory_bytes,
                ..Default::default()
            })
            .collect()
    }

    fn check(input: &[(u64, u64)], max: usize, expected: &[(u64, u64)]) {
        let got: Vec<(u64, u64)> = decimate(&series(input), max)
            .iter()
            .map(|s| (s.t_ms, s.memory_bytes))
            .collect();
        assert_eq!(got, expected, "decimate({input:?}, {max})");
    }

    #[test]
    fn short_series_is_kept() {
        check(&[(0, 1), (10, 2)], 5, &[(0, 1), (10, 2)]);
        check(&[], 3, &[]);
    }

    #[test]
    fn windows_are_averaged() {
        check(
            &[(0, 10), (1, 20), (2, 30), (3, 40)],
            2,
            &[(0, 15), (2, 35)],
        );
        check(
            &[(0, 0), (1, 3), (2, 6), (3, 9), (4, 12), (5, 15)],
            3,
            &[(0, 1), (2, 7), (4, 13)],
        );
    }

    #[test]
    fn gaps_make_no_points_and_bound_holds() {
        check(&[(0, 1), (1, 1), (2, 1), (100, 5)], 2, &[(1, 1), (100, 5)]);
        let long: Vec<(u64, u64)> = (0..10_000).map(|i| (i * 7, i)).collect();
        assert!(decimate(&series(&long), 100).len() <= 100);
        assert_eq!(decimate(&series(&long), 0).len(), 0);
    }
}
