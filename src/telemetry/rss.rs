//! This process's resident memory and the machine's load average, read from
//! `/proc` (Linux; `None` elsewhere): `/metrics` shows the node's
//! (`swf_process_rss_bytes`), and `swf bench` reports its own (in embedded
//! mode the node runs in the benchmark's process).

/// Resident set size of this process, in KiB (`/proc/self/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rss {
    /// `VmHWM`: the peak since the process started or the peak was last reset.
    pub peak_kib: u64,
    /// `VmRSS`: resident now.
    pub current_kib: u64,
}

impl Rss {
    /// Reads `/proc/self/status`; `None` where it does not exist or lacks the fields.
    pub fn read() -> Option<Rss> {
        let text = std::fs::read_to_string("/proc/self/status").ok()?;
        parse_status(&text)
    }

    pub fn peak_mib(&self) -> f64 {
        mib(self.peak_kib)
    }

    pub fn current_mib(&self) -> f64 {
        mib(self.current_kib)
    }
}

/// KiB to MiB, one decimal.
fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// The `VmHWM` and `VmRSS` lines of a `/proc/<pid>/status` text
/// (`VmHWM:\t   10240 kB`). `None` when either is missing or not a number
/// of kB.
pub fn parse_status(text: &str) -> Option<Rss> {
    let field = |name: &str| -> Option<u64> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?;
        line.trim().strip_suffix("kB")?.trim().parse().ok()
    };
    Some(Rss {
        peak_kib: field("VmHWM")?,
        current_kib: field("VmRSS")?,
    })
}

/// Resets this process's peak RSS to its current RSS (writes `5` to
/// `/proc/self/clear_refs`, Linux 4.0 and later), so that the next
/// [`Rss::read`] reports the peak since now. False where that is refused
/// or unsupported: the peak is then the process's lifetime peak.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`).
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    parse_loadavg(&text)
}

fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(|s| s.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tswf\nUmask:\t0022\nState:\tS (sleeping)\n\
        VmPeak:\t 2214520 kB\nVmSize:\t 2148984 kB\nVmLck:\t       0 kB\n\
        VmHWM:\t   88412 kB\nVmRSS:\t   61260 kB\nRssAnon:\t   40000 kB\nThreads:\t7\n";

    #[test]
    fn status_parser_reads_peak_and_current() {
        let r = parse_status(STATUS).expect("parsed");
        assert_eq!(
            r,
            Rss {
                peak_kib: 88_412,
                current_kib: 61_260
            }
        );
        assert_eq!((r.peak_mib(), r.current_mib()), (86.3, 59.8));
    }

    #[test]
    fn status_parser_refuses_missing_or_odd_fields() {
        // VmRSS missing (a kernel thread's status has neither).
        assert_eq!(parse_status("Name:\tkthreadd\nVmHWM:\t 1 kB\n"), None);
        // Not kB, not a number, or only a prefix of the name.
        assert_eq!(parse_status("VmHWM:\t 12 MB\nVmRSS:\t 1 kB\n"), None);
        assert_eq!(parse_status("VmHWM:\t x kB\nVmRSS:\t 1 kB\n"), None);
        assert_eq!(parse_status("VmHWMx:\t 1 kB\nVmRSS:\t 1 kB\n"), None);
        assert_eq!(parse_status(""), None);
    }

    #[test]
    fn the_live_process_has_a_peak_at_least_its_current_rss() {
        if !std::path::Path::new("/proc/self/status").exists() {
            assert_eq!(Rss::read(), None);
            return;
        }
        let r = Rss::read().expect("Linux /proc/self/status has VmHWM and VmRSS");
        assert!(r.current_kib > 0 && r.peak_kib >= r.current_kib, "{r:?}");
    }

    #[test]
    fn loadavg_parser() {
        assert_eq!(
            parse_loadavg("3.78 3.41 3.69 2/411 12345\n"),
            Some([3.78, 3.41, 3.69])
        );
        assert_eq!(parse_loadavg("3.78 x"), None);
    }
}
