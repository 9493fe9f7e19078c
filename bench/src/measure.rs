//! Figures read from the running process and the machine, shared by the SFU and relay
//! scenarios: per-thread CPU time and resident memory (from /proc), quantiles of samples
//! and of bucketed histograms, and the provenance a result file records.

use anyhow::Context;
use std::path::Path;

/// Clock ticks per second of /proc's CPU times (`sysconf(_SC_CLK_TCK)`, which Linux fixes
/// at 100 for user space on every architecture it runs on).
pub const CLK_TCK: f64 = 100.0;

/// User + system CPU ticks in a /proc `stat` line.
fn stat_ticks(stat: &str) -> anyhow::Result<u64> {
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .context("stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

/// CPU seconds (user + system) of this process's threads whose name starts with
/// `prefix`, and how many such threads there are.
pub fn threads_cpu(prefix: &str) -> anyhow::Result<(f64, usize)> {
    let mut ticks = 0;
    let mut n = 0;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let dir = entry?.path();
        // A thread may end between the listing and the reads.
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        ticks += stat_ticks(&stat)?;
        n += 1;
    }
    Ok((ticks as f64 / CLK_TCK, n))
}

/// CPU seconds of every thread of this process, by thread name (summed per name).
pub fn cpu_by_thread_name() -> anyhow::Result<Vec<(String, f64)>> {
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let dir = entry?.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue;
        };
        *by.entry(comm.trim_end().to_owned()).or_default() += stat_ticks(&stat)?;
    }
    Ok(by
        .into_iter()
        .map(|(k, t)| (k, t as f64 / CLK_TCK))
        .collect())
}

/// CPU seconds of the calling thread.
pub fn own_thread_cpu() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    Ok(stat_ticks(&stat)? as f64 / CLK_TCK)
}

/// CPU seconds of the whole process.
pub fn process_cpu() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    Ok(stat_ticks(&stat)? as f64 / CLK_TCK)
}

/// Resident memory now and at its peak, in MiB.
pub fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Datagrams the kernel dropped at each of these local UDP ports (IPv4) because the
/// socket's receive buffer was full, from the `drops` column of /proc/net/udp (counted
/// since each socket was made); ports with no socket are left out.
pub fn udp_drops(ports: &[u16]) -> std::collections::HashMap<u16, u64> {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            let drops = f.last()?.parse().ok()?;
            ports.contains(&port).then_some((port, drops))
        })
        .collect()
}

/// The sum of [`udp_drops`] over `ports`.
pub fn udp_drops_sum(ports: &[u16]) -> u64 {
    udp_drops(ports).values().sum()
}

/// This network namespace's UDP `RcvbufErrors` (/proc/net/snmp): every socket's drops.
pub fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// The machine: cores, CPU model, kernel.
pub fn machine() -> serde_json::Value {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|k| k.trim().to_owned());
    serde_json::json!({ "nproc": nproc, "cpu_model": model, "kernel": kernel })
}

/// `git rev-parse HEAD`, if this runs in a checkout.
pub fn git_head() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The `q` quantile of sorted samples (nearest rank); `None` without samples.
pub fn quantile_sorted(sorted: &[u32], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i.min(sorted.len() - 1)).map(|v| f64::from(*v))
}

/// The `q` quantile of a bucketed histogram, interpolated linearly within its bucket (as
/// Prometheus' `histogram_quantile` does). `bounds` are the buckets' upper bounds, `counts`
/// the (non-cumulative) counts per bucket with one more for +Inf. A quantile in the +Inf
/// bucket is reported as the last finite bound. `None` without observations.
pub fn histogram_quantile(bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let target = q * total as f64;
    let mut below = 0.0;
    for (i, c) in counts.iter().enumerate() {
        let c = *c as f64;
        if below + c >= target && c > 0.0 {
            let Some(upper) = bounds.get(i) else {
                return bounds.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            return Some(lower + (upper - lower) * ((target - below) / c));
        }
        below += c;
    }
    bounds.last().copied()
}

/// Writes `value` as pretty JSON to `dir/name`, making `dir` if needed.
pub fn write_json(dir: &Path, name: &str, value: &serde_json::Value) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!("\nwrote {}", path.display());
    Ok(())
}

/// A duration in µs, for tables ("-" when unknown).
pub fn us(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0} µs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let bounds = [10.0, 20.0, 40.0];
        // 10 in (0, 10], 10 in (10, 20], none above.
        let counts = [10, 10, 0, 0];
        assert_eq!(histogram_quantile(&bounds, &counts, 0.5), Some(10.0));
        assert_eq!(histogram_quantile(&bounds, &counts, 0.75), Some(15.0));
        assert_eq!(histogram_quantile(&bounds, &[0, 0, 0, 5], 0.5), Some(40.0));
        assert_eq!(histogram_quantile(&bounds, &[0; 4], 0.5), None);
        assert_eq!(quantile_sorted(&[1, 2, 3, 4, 5], 0.5), Some(3.0));
    }

    #[test]
    fn thread_cpu_is_readable() {
        assert!(own_thread_cpu().is_ok());
        assert!(process_cpu().is_ok());
        assert!(threads_cpu("").is_ok_and(|(_, n)| n >= 1));
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = s.local_addr().expect("addr").port();
        assert_eq!(udp_drops(&[port]).get(&port), Some(&0));
    }
}
