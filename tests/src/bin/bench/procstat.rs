//! CPU time and resident memory of processes, read from `/proc`.

/// Clock ticks per second for `/proc/<pid>/stat` (USER_HZ; 100 on every Linux we run).
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds used so far by `pid` (all its threads).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ")": field 3 is index 0, so utime (14) is index 11 and stime (15) index 12.
    let utime: f64 = fields.get(11).unwrap_or(&"0").parse()?;
    let stime: f64 = fields.get(12).unwrap_or(&"0").parse()?;
    Ok((utime + stime) / TICKS_PER_SEC)
}

/// Total CPU seconds of several processes.
pub fn cpu_total(pids: &[u32]) -> anyhow::Result<f64> {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

/// Resident set size of `pid` in MiB.
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?
        .parse()?;
    Ok(kib / 1024.0)
}
