//! What the report says about the machine and the files: the processor, memory and load, the
//! CPU time this process used, the disk's sync latency, and the size of a store's segments.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result};

/// The processor, the number of logical CPUs, memory, kernel and load, from `/proc`.
pub fn machine() -> String {
    let read = |path: &str| fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown processor", |(_, name)| name.trim());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let memory_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let kernel = read("/proc/sys/kernel/osrelease");
    let loadavg = read("/proc/loadavg");
    let load = loadavg.split_whitespace().next().unwrap_or("unknown");
    format!(
        "{model}, {cpus} logical CPUs, {:.1} GiB memory, Linux {}; load average {load} at the \
         start",
        memory_kib / 1_048_576.0,
        kernel.trim()
    )
}

/// Reads the CPU time the whole process has used (every thread, living or ended), from
/// `/proc/self/stat`, in clock ticks converted to seconds.
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    ticks_per_second: f64,
}

impl Default for CpuClock {
    fn default() -> CpuClock {
        CpuClock::new()
    }
}

impl CpuClock {
    pub fn new() -> CpuClock {
        // `getconf` rather than `sysconf(3)`, which would need unsafe code; 100 is what Linux
        // reports on every common architecture.
        let ticks = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            .unwrap_or(100.0);
        CpuClock {
            ticks_per_second: ticks,
        }
    }

    /// User plus system CPU seconds of the whole process so far; `None` where `/proc` cannot
    /// say.
    pub fn seconds(&self) -> Option<f64> {
        self.read(Path::new("/proc/self/stat"))
    }

    /// The same for the calling thread alone.
    pub fn this_thread_seconds(&self) -> Option<f64> {
        self.read(Path::new("/proc/thread-self/stat"))
    }

    /// The CPU seconds of each living thread of this process named `name`, by thread id.
    pub fn threads_named(&self, name: &str) -> Vec<(u64, f64)> {
        let Ok(tasks) = fs::read_dir("/proc/self/task") else {
            return Vec::new();
        };
        tasks
            .filter_map(Result::ok)
            .filter(|task| {
                fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
            })
            .filter_map(|task| {
                let tid = task.file_name().to_str()?.parse().ok()?;
                Some((tid, self.read(&task.path().join("stat"))?))
            })
            .collect()
    }

    fn read(&self, stat_path: &Path) -> Option<f64> {
        let stat = fs::read_to_string(stat_path).ok()?;
        // The command name, in parentheses, may hold spaces; the fields follow the last `)`.
        let (_, fields) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = fields.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line; `state`, field 3, comes first here.
        let user: f64 = fields.get(11)?.parse().ok()?;
        let system: f64 = fields.get(12)?.parse().ok()?;
        Some((user + system) / self.ticks_per_second)
    }
}

/// The median time of a small write followed by `fdatasync` in `dir`: what one strict-mode
/// group commit waits for at least.
pub fn sync_latency(dir: &Path) -> Result<f64> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let path = dir.join(format!(".sync-probe-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("cannot create `{}`", path.display()))?;
    let block = vec![0x5a_u8; 4096];
    let mut samples = Vec::with_capacity(50);
    for _ in 0..50 {
        let started = Instant::now();
        file.write_all(&block)
            .and_then(|()| file.sync_data())
            .with_context(|| format!("cannot write and sync `{}`", path.display()))?;
        samples.push(started.elapsed().as_secs_f64());
    }
    drop(file);
    fs::remove_file(&path).with_context(|| format!("cannot remove `{}`", path.display()))?;
    Ok(median(&mut samples))
}

/// The median of `samples` (sorted in place); 0 for none.
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => samples.get(n / 2).copied().unwrap_or(0.0),
        _ => {
            let low = samples.get(n / 2 - 1).copied().unwrap_or(0.0);
            let high = samples.get(n / 2).copied().unwrap_or(0.0);
            (low + high) / 2.0
        }
    }
}

/// The segments of a store: how many, and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segments {
    pub files: u64,
    pub bytes: u64,
    pub partitions: u64,
}

/// Counts the `*.parquet` files under `DATA/events/date=*/`.
pub fn segments(data_dir: &Path) -> Result<Segments> {
    let events_dir = data_dir.join(portcullis_audit::store::EVENTS_DIR);
    let mut found = Segments::default();
    let list =
        |dir: &Path| fs::read_dir(dir).with_context(|| format!("cannot list `{}`", dir.display()));
    for partition in list(&events_dir)? {
        let partition = partition.context("cannot list the partitions")?;
        if !partition.path().is_dir() {
            continue;
        }
        found.partitions += 1;
        for file in list(&partition.path())? {
            let file = file.context("cannot list a partition")?;
            if file.file_name().to_string_lossy().ends_with(".parquet") {
                found.files += 1;
                found.bytes += file
                    .metadata()
                    .context("cannot read a segment's size")?
                    .len();
            }
        }
    }
    Ok(found)
}

/// The bytes of the files directly in `dir`; 0 when it cannot be read (it may be between
/// files).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.metadata().ok())
        .filter(fs::Metadata::is_file)
        .map(|metadata| metadata.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn cpu_time_is_readable_and_grows() {
        let clock = CpuClock::new();
        let before = clock.seconds().unwrap();
        let mut x = 0u64;
        let started = Instant::now();
        while started.elapsed().as_millis() < 100 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(clock.seconds().unwrap() > before);
        assert!(clock.this_thread_seconds().unwrap() > 0.0);
        // The thread names itself as it starts: it says when it has.
        let (started, running) = std::sync::mpsc::channel();
        let (finish, finished) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::Builder::new()
            .name("cpu-test-named".to_owned())
            .spawn(move || {
                started.send(()).unwrap();
                finished.recv().unwrap();
            })
            .unwrap();
        running.recv().unwrap();
        assert_eq!(clock.threads_named("cpu-test-named").len(), 1);
        finish.send(()).unwrap();
        worker.join().unwrap();
    }
}
