//! Restarting `swf dev` on the data dirs a previous run left, however it
//! ended (Ctrl-C, or `kill -9` part way through a drill): which region's
//! database is the primary, which are replicas, and what a crash left half
//! done.
//!
//! Each region's dir is missing, incomplete (no `PG_VERSION`: an
//! interrupted clone), a standby (`standby.signal`) or a primary. One
//! primary: it is the primary, fenced or not (`swf drill recover` decides
//! what to do with a fence). Several (a drill promoted its target and was
//! killed before the old primary rejoined): the one on the newest WAL
//! timeline is the primary (a promotion starts a new timeline); the others
//! start as they are but fenced (read-only), never silently turned into
//! standbys of anything, so restarting never makes two writable primaries;
//! `swf drill recover` rejoins them. Missing and incomplete dirs are cloned
//! from the primary.

use std::path::Path;

use anyhow::bail;

/// What a region's data dir holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DirState {
    Missing,
    /// Not empty but no `PG_VERSION`.
    Incomplete,
    Standby,
    /// Out of recovery, on this WAL timeline.
    Primary {
        timeline: u64,
    },
}

/// Reads what `dir` holds, from its files alone.
pub(super) fn dir_state(dir: &Path) -> DirState {
    if !dir.join("PG_VERSION").is_file() {
        let empty = std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none());
        return if empty {
            DirState::Missing
        } else {
            DirState::Incomplete
        };
    }
    if dir.join("standby.signal").exists() {
        return DirState::Standby;
    }
    // Every promotion writes `<timeline>.history` (8 hex digits).
    let timeline = std::fs::read_dir(dir.join("pg_wal"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let hex = name.strip_suffix(".history")?;
            u64::from_str_radix(hex, 16).ok()
        })
        .max()
        .unwrap_or(1);
    DirState::Primary { timeline }
}

/// Which region is the primary, and which other regions hold primaries to
/// start fenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Layout {
    pub primary: String,
    pub fenced: Vec<String>,
}

/// The layout of a restart from each region's dir state; `recorded` is the
/// write region `cluster.json` names, if any (a tie-breaker, and the primary
/// of a cluster with no data yet).
pub(super) fn layout(
    states: &[(String, DirState)],
    recorded: Option<&str>,
) -> anyhow::Result<Layout> {
    let primaries: Vec<(&str, u64)> = states
        .iter()
        .filter_map(|(r, s)| match s {
            DirState::Primary { timeline } => Some((r.as_str(), *timeline)),
            _ => None,
        })
        .collect();
    let Some(newest) = primaries.iter().map(|(_, t)| *t).max() else {
        let standbys: Vec<&str> = states
            .iter()
            .filter(|(_, s)| *s == DirState::Standby)
            .map(|(r, _)| r.as_str())
            .collect();
        if !standbys.is_empty() {
            bail!(
                "no region's data dir holds a primary ({} hold only replicas): start over with --fresh",
                standbys.join(", ")
            );
        }
        let first = states.first().map(|(r, _)| r.as_str()).unwrap_or_default();
        let primary = recorded
            .filter(|r| states.iter().any(|(s, _)| s == r))
            .unwrap_or(first);
        return Ok(Layout {
            primary: primary.to_string(),
            fenced: Vec::new(),
        });
    };
    let newest: Vec<&str> = primaries
        .iter()
        .filter(|(_, t)| *t == newest)
        .map(|(r, _)| *r)
        .collect();
    let primary = recorded
        .filter(|r| newest.contains(r))
        .unwrap_or(newest[0])
        .to_string();
    let fenced = primaries
        .iter()
        .map(|(r, _)| r.to_string())
        .filter(|r| *r != primary)
        .collect();
    Ok(Layout { primary, fenced })
}

/// The write region `cluster.json` records, if it can be read.
pub(super) fn recorded_primary(cluster_path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(cluster_path).ok()?;
    serde_json::from_str::<super::ClusterFile>(&text)
        .ok()
        .map(|c| c.write_region)
}

/// Where a dir being replaced goes first: renamed away in one step, so a
/// crash leaves the old dir whole or gone, never half deleted.
pub(super) fn trash_path(dir: &Path) -> std::path::PathBuf {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    dir.with_file_name(format!(".{name}.swf-trash"))
}

/// Moves `dir` out of the way and deletes it.
pub(super) fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let trash = trash_path(dir);
    if trash.exists() {
        std::fs::remove_dir_all(&trash).with_context(|| format!("remove {}", trash.display()))?;
    }
    if dir.exists() {
        std::fs::rename(dir, &trash)
            .with_context(|| format!("move {} to {}", dir.display(), trash.display()))?;
        std::fs::remove_dir_all(&trash).with_context(|| format!("remove {}", trash.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(v: &[(&str, DirState)]) -> Vec<(String, DirState)> {
        v.iter().map(|(r, s)| (r.to_string(), *s)).collect()
    }

    #[test]
    fn the_newest_timeline_is_the_primary_and_older_primaries_start_fenced() {
        use DirState::*;
        let l = |v: &[(&str, DirState)], rec: Option<&str>| layout(&st(v), rec).unwrap();
        // Fresh: the recorded region, else the first.
        assert_eq!(l(&[("a", Missing), ("b", Missing)], None).primary, "a");
        assert_eq!(l(&[("a", Missing), ("b", Missing)], Some("b")).primary, "b");
        // One primary: it, whatever cluster.json says.
        let one = l(&[("a", Standby), ("b", Primary { timeline: 2 })], Some("a"));
        assert_eq!((one.primary.as_str(), one.fenced.len()), ("b", 0));
        // Killed after promotion: the promoted one (newer timeline) wins,
        // the old one starts fenced.
        let two = l(
            &[
                ("a", Primary { timeline: 1 }),
                ("b", Primary { timeline: 2 }),
            ],
            Some("a"),
        );
        assert_eq!((two.primary.as_str(), two.fenced), ("b", vec!["a".into()]));
        // The old primary's dir gone mid-rejoin: cloned again.
        let gone = l(&[("a", Missing), ("b", Primary { timeline: 3 })], Some("b"));
        assert_eq!(gone.primary, "b");
        let half = l(&[("a", Incomplete), ("b", Primary { timeline: 3 })], None);
        assert_eq!(half.primary, "b");
        // Replicas only: refused with a way out.
        let err = layout(&st(&[("a", Standby), ("b", Missing)]), Some("b")).unwrap_err();
        assert!(err.to_string().contains("--fresh"), "{err}");
    }
}
