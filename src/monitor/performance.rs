//! Resource samples from procfs: the daemon's own process and the host. Cheap reads of a
//! few /proc files, fine on the loop at scrape or check time.

use procfs::Current;
use serde_json::{json, Value};

/// The daemon process.
#[derive(Debug, Clone, Default)]
pub struct ProcessSample {
    /// Resident set size.
    pub rss_bytes: u64,
    /// User + system CPU time.
    pub cpu_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Threads.
    pub threads: u64,
    /// Voluntary context switches of the main thread.
    pub voluntary_ctxt_switches: u64,
}

/// The host.
#[derive(Debug, Clone, Default)]
pub struct HostSample {
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    /// Total memory.
    pub mem_total_bytes: u64,
    /// Available memory.
    pub mem_available_bytes: u64,
    /// Online CPUs.
    pub cpus: u64,
}

/// Reads the daemon's own process sample (missing fields stay 0).
pub fn own_process() -> ProcessSample {
    let mut s = ProcessSample::default();
    let Ok(me) = procfs::process::Process::myself() else {
        return s;
    };
    if let Ok(stat) = me.stat() {
        let ticks = procfs::ticks_per_second() as f64;
        s.cpu_seconds = (stat.utime + stat.stime) as f64 / ticks.max(1.0);
        s.threads = stat.num_threads.max(0) as u64;
    }
    if let Ok(statm) = me.statm() {
        s.rss_bytes = statm.resident * procfs::page_size();
    }
    if let Ok(status) = me.status() {
        s.voluntary_ctxt_switches = status.voluntary_ctxt_switches.unwrap_or(0);
    }
    s.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    s
}

/// Reads the host sample (missing fields stay 0).
pub fn host() -> HostSample {
    let mut h = HostSample::default();
    if let Ok(l) = procfs::LoadAverage::current() {
        h.load = [f64::from(l.one), f64::from(l.five), f64::from(l.fifteen)];
    }
    if let Ok(m) = procfs::Meminfo::current() {
        h.mem_total_bytes = m.mem_total;
        h.mem_available_bytes = m.mem_available.unwrap_or(m.mem_free);
    }
    h.cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    h
}

impl ProcessSample {
    /// JSON form.
    pub fn to_json(&self) -> Value {
        json!({
            "rss_bytes": self.rss_bytes,
            "cpu_seconds": (self.cpu_seconds * 1000.0).round() / 1000.0,
            "open_fds": self.open_fds,
            "threads": self.threads,
            "voluntary_ctxt_switches": self.voluntary_ctxt_switches,
        })
    }
}

impl HostSample {
    /// JSON form, with memory usage in percent.
    pub fn to_json(&self) -> Value {
        let used = if self.mem_total_bytes > 0 {
            100.0 * (1.0 - self.mem_available_bytes as f64 / self.mem_total_bytes as f64)
        } else {
            0.0
        };
        json!({
            "load_average": self.load,
            "cpus": self.cpus,
            "memory_total_bytes": self.mem_total_bytes,
            "memory_available_bytes": self.mem_available_bytes,
            "memory_used_percent": (used * 100.0).round() / 100.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_read_real_values() {
        let p = own_process();
        assert!(p.rss_bytes > 0 && p.open_fds > 0 && p.threads >= 1);
        let h = host();
        assert!(h.mem_total_bytes > 0 && h.cpus >= 1);
        assert!(h.to_json()["memory_used_percent"].as_f64().is_some());
    }
}
