//! What the benchmark commands share: durations on the command line, the throughput
//! line printed every second, and latency percentiles.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Parses `500ms`, `10s`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("bad duration `{s}`"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in `{s}` (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// p50, p99, p999 and max of a set of samples (in the samples' unit).
#[derive(Debug, Serialize, Default, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

/// The percentiles of `v` (all zero when empty).
#[must_use]
pub fn percentiles(mut v: Vec<u64>) -> Percentiles {
    let Some(&max) = v.iter().max() else {
        return Percentiles::default();
    };
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max,
    }
}

/// Prints throughput every second until `stop` (a thread, so busy tasks cannot starve it).
pub fn reporter(
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    size: usize,
    quiet: bool,
    what: &'static str,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut last = 0;
        let mut tick = Instant::now();
        while !stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(100));
            if tick.elapsed() >= Duration::from_secs(1) {
                let now = count.load(Ordering::Relaxed);
                let dt = tick.elapsed().as_secs_f64();
                tick = Instant::now();
                if !quiet {
                    eprintln!(
                        "{what} tps {:>9.0} msg/s {:>8.1} MB/s total {now}",
                        (now - last) as f64 / dt,
                        (now - last) as f64 * size as f64 / dt / 1e6
                    );
                }
                last = now;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn percentiles_of_a_known_set() {
        let p = percentiles((1..=1000).collect());
        assert_eq!((p.p50, p.p99, p.p999, p.max), (501, 991, 1000, 1000));
        assert_eq!(percentiles(Vec::new()).max, 0);
    }
}
