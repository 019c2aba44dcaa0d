//! CPU time spent by server processes during a benchmark, read from
//! `/proc/<pid>/stat` (same machine only). Each named process counts with all
//! its live descendants, so a PostgreSQL postmaster's pid covers its
//! per-connection backends. The capacity plan (docs/capacity.md) turns these
//! into cores per message.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};

/// `NAME=PID`: one process (and its descendants) to account for.
#[derive(Clone, Debug)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

impl std::str::FromStr for Watched {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (name, pid) = s
            .split_once('=')
            .with_context(|| format!("{s:?}: expected NAME=PID"))?;
        let pid = pid.parse().with_context(|| format!("{s:?}: bad pid"))?;
        if name.is_empty() {
            bail!("{s:?}: empty name");
        }
        Ok(Watched {
            name: name.to_owned(),
            pid,
        })
    }
}

/// Clock ticks per second of `/proc/*/stat` times.
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// `(ppid, utime + stime)` of one process, in ticks.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after it.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// CPU ticks of each watched process tree, now.
pub fn sample(watched: &[Watched]) -> Vec<u64> {
    let mut all: HashMap<u32, (u32, u64)> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                if let Some(s) = stat(pid) {
                    all.insert(pid, s);
                }
            }
        }
    }
    watched
        .iter()
        .map(|w| {
            all.iter()
                .filter(|(pid, _)| descends_from(**pid, w.pid, &all))
                .map(|(_, (_, ticks))| ticks)
                .sum()
        })
        .collect()
}

fn descends_from(mut pid: u32, root: u32, all: &HashMap<u32, (u32, u64)>) -> bool {
    for _ in 0..64 {
        if pid == root {
            return true;
        }
        match all.get(&pid) {
            Some((ppid, _)) if *ppid != 0 && *ppid != pid => pid = *ppid,
            _ => return false,
        }
    }
    false
}

/// Prints each watched tree's CPU over the run: seconds, cores used on
/// average, and milliseconds per unit of work (`per` units, e.g. messages).
pub fn report(watched: &[Watched], before: &[u64], after: &[u64], secs: f64, per: u64, unit: &str) {
    if watched.is_empty() {
        return;
    }
    let tps = ticks_per_second();
    println!("  CPU during the run (process and its descendants)");
    let mut total = 0.0;
    for (w, (b, a)) in watched.iter().zip(before.iter().zip(after)) {
        let cpu = a.saturating_sub(*b) as f64 / tps;
        total += cpu;
        println!(
            "    {:<12} {:>8.2} s  {:>5.2} cores  {:>7.3} ms per {unit}",
            w.name,
            cpu,
            cpu / secs.max(1e-9),
            cpu * 1000.0 / per.max(1) as f64
        );
    }
    println!(
        "    {:<12} {:>8.2} s  {:>5.2} cores  {:>7.3} ms per {unit}",
        "all",
        total,
        total / secs.max(1e-9),
        total * 1000.0 / per.max(1) as f64
    );
}
