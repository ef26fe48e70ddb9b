//! The node's cache of run reads: each run's status document and lineage
//! document ([`RunDoc`]), keyed by `(run_id, kind)`.
//!
//! **Why each entry knows its LSN.** A read may carry a consistency
//! [`Token`] (the epoch and WAL position of a write the reader must see).
//! A cached document is only as new as the database it was read from, so
//! every entry records the epoch and LSN that database had replayed when
//! the document was read. [`CachedDoc::satisfies`] answers "does this entry
//! reflect the token's write?": same epoch and `entry.lsn >= token.lsn`.
//! LSNs of different epochs (timelines) do not compare, so an entry from any
//! other epoch, older or newer, never satisfies a token; the router then goes
//! to the primary and puts the fresh document back. A present entry that
//! fails the token counts as a miss with reason `stale_token`.
//!
//! **TTL rules.** Per entry (moka's [`Expiry`]): a run that is still running
//! changes under us, so its documents live [`CacheSettings::running_ttl`]
//! (250 ms by default: a bound on how stale a token-less read can be). A
//! terminal run (completed, failed, cancelled; the caller decides) no longer
//! changes, so its documents live [`CacheSettings::terminal_ttl`] (10 min).
//! The TTL is counted from [`CachedDoc::stored_at`] (when the document was
//! read from the database), not from the insert, so re-putting an old read
//! does not extend its life. Reads do not extend it either.
//!
//! **Bounded in bytes.** Each entry weighs what its parsed document holds
//! in memory ([`CachedDoc::bytes`], from [`held_bytes`]: every string,
//! array and map node with the allocator's overhead), but at least [`CacheSettings::max_bytes`] / [`CacheSettings::max_entries`];
//! the weights of all entries stay within `max_bytes` (moka's weigher,
//! evicting by its TinyLFU policy), so both bounds hold: at most `max_bytes`
//! of documents and at most `max_entries` entries. A lineage of many
//! attempts costs what it weighs, and one heavier than the whole cache is not
//! kept at all. Moka applies the bound in its maintenance, which runs as
//! entries are written, so the cache may briefly hold more.
//!
//! **Invalidation.** [`LineageCache::put`] never replaces an entry with a
//! higher `(epoch, lsn)` by an older read (the check and the write are
//! atomic per key). A write through this node (cancel, completions) calls
//! [`LineageCache::invalidate`], which drops both documents of the run. A
//! read that raced the write and puts its older document after the
//! invalidation can still be served to token-less reads until its TTL ends;
//! a read carrying the write's token never sees it (its LSN is lower).
//!
//! **Metrics** (label `cache` = [`CacheSettings::name`]):
//! `swf_cache_hits_total`; `swf_cache_misses_total` with `reason` =
//! `absent` | `stale_token`; `swf_cache_evictions_total` with `cause` =
//! `size` | `expired` (only removals moka counts as evictions; replacing an
//! entry by `put` and dropping it by `invalidate` are not evictions and are
//! not counted); gauge `swf_cache_entries`, +1 for each document `put`
//! stores and -1 for each removal moka reports to the listener, whatever its
//! cause (a replacement is +1 -1), so it tracks live entries without
//! waiting for moka's lazy [`LineageCache::entry_count`]. Expired entries
//! leave it when moka's maintenance removes them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use moka::Expiry;
use uuid::Uuid;

use crate::model::token::{Lsn, Token};
use crate::store::RunDoc;

/// Sizing and lifetimes of a [`LineageCache`].
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Value of the `cache` label on this cache's metrics.
    pub name: String,
    /// Most entries kept (each document of a run is one entry); 0 keeps none.
    pub max_entries: u64,
    /// Most bytes of documents kept (as held in memory, [`held_bytes`]);
    /// 0 keeps none.
    pub max_bytes: u64,
    /// Lifetime of a document of a run that has not ended.
    pub running_ttl: Duration,
    /// Lifetime of a document of a completed, failed or cancelled run.
    pub terminal_ttl: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            name: "runs".to_string(),
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
            running_ttl: Duration::from_millis(250),
            terminal_ttl: Duration::from_secs(600),
        }
    }
}

/// One cached document and what it reflects.
#[derive(Debug, Clone)]
pub struct CachedDoc {
    /// The document as the API returns it.
    pub doc: Arc<serde_json::Value>,
    /// Epoch of the database it was read from.
    pub epoch: u64,
    /// WAL position that database had replayed when the document was read.
    pub lsn: Lsn,
    /// The run had ended (completed, failed or cancelled) in this document.
    pub terminal: bool,
    /// What the parsed document holds in memory ([`held_bytes`]; its
    /// weight in the cache).
    pub bytes: usize,
    /// When the document was read; its TTL counts from here.
    pub stored_at: Instant,
}

impl CachedDoc {
    /// True when this entry reflects at least `token`, by the one rule
    /// [`Token::satisfied_by`] (same epoch and `lsn >= token.lsn`); no token
    /// -> true. An entry of another epoch, older or newer, never satisfies it.
    pub fn satisfies(&self, token: Option<&Token>) -> bool {
        match token {
            None => true,
            Some(t) => t.satisfied_by(self.epoch, self.lsn),
        }
    }

    fn version(&self) -> (u64, Lsn) {
        (self.epoch, self.lsn)
    }
}

/// Per-entry lifetime: `running_ttl` or `terminal_ttl`, from `stored_at`.
struct DocExpiry {
    running_ttl: Duration,
    terminal_ttl: Duration,
}

impl DocExpiry {
    fn remaining(&self, doc: &CachedDoc, now: Instant) -> Duration {
        let ttl = if doc.terminal {
            self.terminal_ttl
        } else {
            self.running_ttl
        };
        ttl.saturating_sub(now.saturating_duration_since(doc.stored_at))
    }
}

impl Expiry<(Uuid, RunDoc), CachedDoc> for DocExpiry {
    fn expire_after_create(
        &self,
        _key: &(Uuid, RunDoc),
        value: &CachedDoc,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(self.remaining(value, created_at))
    }

    fn expire_after_update(
        &self,
        _key: &(Uuid, RunDoc),
        value: &CachedDoc,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.remaining(value, updated_at))
    }
}

/// The node's cache of run status and lineage documents.
pub struct LineageCache {
    inner: Cache<(Uuid, RunDoc), CachedDoc>,
    name: String,
}

/// Bytes a `serde_json::Value` takes inline (in its parent, or its `Arc`).
const VALUE: usize = std::mem::size_of::<serde_json::Value>();
/// A map node of `serde_json`'s `BTreeMap<String, Value>`: 11 keys and
/// values, its length and parent link; an inner node adds 12 edges.
const MAP_LEAF: usize = 16 + 11 * (std::mem::size_of::<String>() + VALUE);
const MAP_INNER: usize = MAP_LEAF + 12 * std::mem::size_of::<usize>();
/// What the allocator adds to each allocation (its header and rounding).
const PER_ALLOCATION: usize = 16;

/// What a parsed document held in an `Arc` takes in memory: the JSON text
/// it came from is a poor measure (a 3-key object of short strings is ~30
/// bytes of text and ~700 of map node, keys and values), and weighing by
/// the text let a 64 MiB cache hold ~160 MiB.
pub fn held_bytes(doc: &serde_json::Value) -> usize {
    fn heap(v: &serde_json::Value) -> usize {
        use serde_json::Value;
        let alloc = |bytes: usize| {
            if bytes == 0 {
                0
            } else {
                bytes + PER_ALLOCATION
            }
        };
        match v {
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
            Value::String(s) => alloc(s.capacity()),
            Value::Array(a) => alloc(a.capacity() * VALUE) + a.iter().map(heap).sum::<usize>(),
            Value::Object(m) => {
                // Nodes hold 6 to 11 entries once split; one node until 11.
                let n = m.len();
                let nodes = match n {
                    0 => 0,
                    1..=11 => alloc(MAP_LEAF),
                    _ => {
                        let leaves = n.div_ceil(8);
                        leaves * alloc(MAP_LEAF) + leaves.div_ceil(8) * alloc(MAP_INNER)
                    }
                };
                nodes
                    + m.iter()
                        .map(|(k, v)| alloc(k.capacity()) + heap(v))
                        .sum::<usize>()
            }
        }
    }
    // The Arc's counts and the root value.
    16 + VALUE + PER_ALLOCATION + heap(doc)
}

/// What one entry weighs against [`CacheSettings::max_bytes`]: its bytes,
/// at least `floor` (so at most `max_entries` entries fit), in moka's `u32`.
fn weight(doc: &CachedDoc, floor: u64) -> u32 {
    (doc.bytes as u64).max(floor).min(u64::from(u32::MAX)) as u32
}

impl LineageCache {
    /// Builds an empty cache.
    pub fn new(settings: CacheSettings) -> Self {
        let label = settings.name.clone();
        let (capacity, floor) = match settings.max_entries {
            0 => (0, 1),
            n => (settings.max_bytes, (settings.max_bytes / n).max(1)),
        };
        let inner = Cache::builder()
            .name(&settings.name)
            .max_capacity(capacity)
            .weigher(move |_key, doc: &CachedDoc| weight(doc, floor))
            .expire_after(DocExpiry {
                running_ttl: settings.running_ttl,
                terminal_ttl: settings.terminal_ttl,
            })
            .eviction_listener(move |_key, _value, cause: RemovalCause| {
                metrics::gauge!("swf_cache_entries", "cache" => label.clone()).decrement(1.0);
                let cause = match cause {
                    RemovalCause::Size => "size",
                    RemovalCause::Expired => "expired",
                    // Replaced by a put or dropped by invalidate: not evictions.
                    RemovalCause::Replaced | RemovalCause::Explicit => return,
                };
                metrics::counter!("swf_cache_evictions_total",
                    "cache" => label.clone(), "cause" => cause)
                .increment(1);
            })
            .build();
        // Make the series exist before the first put.
        metrics::gauge!("swf_cache_entries", "cache" => settings.name.clone()).increment(0.0);
        LineageCache {
            inner,
            name: settings.name,
        }
    }

    /// Entry if present and fresh (terminal entries live `terminal_ttl`,
    /// running ones `running_ttl`) AND satisfies `token`. Counts a hit, or a
    /// miss with reason `absent` (no fresh entry) or `stale_token` (an entry
    /// that does not reflect the token).
    pub async fn get(
        &self,
        run_id: Uuid,
        kind: RunDoc,
        token: Option<&Token>,
    ) -> Option<CachedDoc> {
        let found = self.inner.get(&(run_id, kind)).await;
        let reason = match found {
            Some(doc) if doc.satisfies(token) => {
                metrics::counter!("swf_cache_hits_total", "cache" => self.name.clone())
                    .increment(1);
                return Some(doc);
            }
            Some(_) => "stale_token",
            None => "absent",
        };
        metrics::counter!("swf_cache_misses_total",
            "cache" => self.name.clone(), "reason" => reason)
        .increment(1);
        None
    }

    /// Inserts unless an entry with a higher `(epoch, lsn)` is already there
    /// (never replaces newer with older). An equal version replaces the
    /// entry (a fresher read of the same state restarts its TTL).
    pub async fn put(&self, run_id: Uuid, kind: RunDoc, doc: CachedDoc) {
        let result = self
            .inner
            .entry((run_id, kind))
            .and_compute_with(|existing| {
                let op = match existing {
                    Some(e) if e.value().version() > doc.version() => Op::Nop,
                    _ => Op::Put(doc),
                };
                std::future::ready(op)
            })
            .await;
        if matches!(
            result,
            CompResult::Inserted(_) | CompResult::ReplacedWith(_)
        ) {
            // A replaced entry is reported to the listener, which takes 1 off.
            metrics::gauge!("swf_cache_entries", "cache" => self.name.clone()).increment(1.0);
        }
    }

    /// Drops both documents of a run (writes through this node: cancel,
    /// completions).
    pub async fn invalidate(&self, run_id: Uuid) {
        self.inner.invalidate(&(run_id, RunDoc::Status)).await;
        self.inner.invalidate(&(run_id, RunDoc::Lineage)).await;
    }

    /// Drops every entry: after an epoch change, documents read before it
    /// may describe runs the new primary never received.
    pub fn clear(&self) {
        self.inner.invalidate_all();
    }

    /// Approximate number of entries (moka counts lazily: expired or evicted
    /// entries leave the count when its maintenance runs).
    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }

    /// Approximate weight of the entries, in bytes of memory (moka counts
    /// lazily, like [`LineageCache::entry_count`]).
    pub fn weighted_bytes(&self) -> u64 {
        self.inner.weighted_size()
    }

    /// The `cache` label of this cache's metrics.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    fn sized(v: serde_json::Value, epoch: u64, lsn: u64, terminal: bool) -> CachedDoc {
        CachedDoc {
            bytes: held_bytes(&v),
            doc: Arc::new(v),
            epoch,
            lsn: Lsn(lsn),
            terminal,
            stored_at: Instant::now(),
        }
    }

    fn doc(epoch: u64, lsn: u64, terminal: bool) -> CachedDoc {
        sized(
            json!({ "lsn": lsn, "terminal": terminal }),
            epoch,
            lsn,
            terminal,
        )
    }

    /// A lineage document of a run whose one step took `attempts` attempts.
    fn lineage(attempts: usize) -> CachedDoc {
        let trace: Vec<_> = (1..=attempts)
            .map(|a| {
                json!({"step_id": "s", "attempt": a, "node_id": "n1", "outcome": "failed",
                            "error": "the handler failed again"})
            })
            .collect();
        sized(
            json!({"status": "failed", "execution_trace": trace}),
            1,
            1,
            true,
        )
    }

    fn cache(running_ttl: Duration, max_entries: u64) -> LineageCache {
        LineageCache::new(CacheSettings {
            name: "test".into(),
            max_entries,
            running_ttl,
            ..CacheSettings::default()
        })
    }

    fn cache_of_bytes(max_bytes: u64) -> LineageCache {
        LineageCache::new(CacheSettings {
            name: "test".into(),
            max_bytes,
            ..CacheSettings::default()
        })
    }

    /// Polls `get` (no token) until it returns None or 2 s pass.
    async fn wait_gone(c: &LineageCache, run: Uuid, kind: RunDoc) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if c.get(run, kind, None).await.is_none() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    #[test]
    fn default_settings() {
        let s = CacheSettings::default();
        assert_eq!(s.max_entries, 10_000);
        assert_eq!(s.max_bytes, 64 * 1024 * 1024);
        assert_eq!(s.running_ttl, Duration::from_millis(250));
        assert_eq!(s.terminal_ttl, Duration::from_secs(600));
        assert_eq!(LineageCache::new(s.clone()).name(), s.name);
    }

    #[test]
    fn satisfies_table() {
        let tok = |epoch, lsn| {
            Some(Token {
                epoch,
                lsn: Lsn(lsn),
            })
        };
        // (entry epoch, entry lsn, token, expected)
        let cases = [
            (1, 100, None, true),
            (1, 100, tok(1, 50), true),
            (1, 100, tok(1, 100), true),
            (1, 100, tok(1, 101), false),
            (1, 100, tok(2, 1), false), // entry from an older epoch
            (2, 100, tok(1, 1), false), // token from an older epoch
            (2, 100, tok(1, 500), false),
        ];
        for (epoch, lsn, token, want) in cases {
            let got = doc(epoch, lsn, false).satisfies(token.as_ref());
            assert_eq!(got, want, "entry {epoch}/{lsn} token {token:?}");
        }
    }

    #[tokio::test]
    async fn put_get_round_trip() {
        let c = cache(Duration::from_secs(60), 100);
        let run = Uuid::new_v4();
        assert!(c.get(run, RunDoc::Status, None).await.is_none());
        c.put(run, RunDoc::Status, doc(1, 10, false)).await;
        let got = c.get(run, RunDoc::Status, None).await.expect("cached");
        assert_eq!((got.epoch, got.lsn), (1, Lsn(10)));
        assert_eq!(got.doc["lsn"], 10);
        let t = Token {
            epoch: 1,
            lsn: Lsn(10),
        };
        assert!(c.get(run, RunDoc::Status, Some(&t)).await.is_some());
        let newer = Token {
            epoch: 1,
            lsn: Lsn(11),
        };
        assert!(c.get(run, RunDoc::Status, Some(&newer)).await.is_none());
        assert!(c.get(run, RunDoc::Lineage, None).await.is_none());
    }

    #[tokio::test]
    async fn running_entry_expires_after_running_ttl() {
        let c = cache(Duration::from_millis(50), 100);
        let run = Uuid::new_v4();
        c.put(run, RunDoc::Status, doc(1, 1, false)).await;
        assert!(wait_gone(&c, run, RunDoc::Status).await, "never expired");
    }

    #[tokio::test]
    async fn terminal_entry_outlives_running_ttl() {
        let c = cache(Duration::from_millis(50), 100);
        let (running, done) = (Uuid::new_v4(), Uuid::new_v4());
        c.put(running, RunDoc::Status, doc(1, 1, false)).await;
        c.put(done, RunDoc::Status, doc(1, 1, true)).await;
        assert!(
            wait_gone(&c, running, RunDoc::Status).await,
            "never expired"
        );
        assert!(c.get(done, RunDoc::Status, None).await.is_some());
    }

    #[tokio::test]
    async fn put_never_replaces_newer_with_older() {
        let c = cache(Duration::from_secs(60), 100);
        let run = Uuid::new_v4();
        // (put epoch, put lsn, expected cached (epoch, lsn) afterwards)
        let steps = [
            (1, 10, (1, 10)),
            (1, 5, (1, 10)),  // older lsn: kept
            (1, 20, (1, 20)), // newer lsn: replaced
            (2, 1, (2, 1)),   // newer epoch: replaced
            (1, 99, (2, 1)),  // older epoch, higher lsn: kept
            (2, 1, (2, 1)),   // same version: replaced (same state)
        ];
        for (epoch, lsn, want) in steps {
            c.put(run, RunDoc::Lineage, doc(epoch, lsn, false)).await;
            let got = c.get(run, RunDoc::Lineage, None).await.expect("cached");
            assert_eq!((got.epoch, got.lsn.0), want, "after put {epoch}/{lsn}");
        }
    }

    #[tokio::test]
    async fn invalidate_removes_both_kinds() {
        let c = cache(Duration::from_secs(60), 100);
        let (run, other) = (Uuid::new_v4(), Uuid::new_v4());
        for kind in [RunDoc::Status, RunDoc::Lineage] {
            c.put(run, kind, doc(1, 1, true)).await;
            c.put(other, kind, doc(1, 1, true)).await;
        }
        c.invalidate(run).await;
        for kind in [RunDoc::Status, RunDoc::Lineage] {
            assert!(c.get(run, kind, None).await.is_none(), "{kind:?}");
            assert!(c.get(other, kind, None).await.is_some(), "{kind:?}");
        }
    }

    #[tokio::test]
    async fn max_entries_bound_respected() {
        let c = cache(Duration::from_secs(60), 10);
        for _ in 0..100 {
            c.put(Uuid::new_v4(), RunDoc::Status, doc(1, 1, true)).await;
        }
        c.inner.run_pending_tasks().await;
        assert!(c.entry_count() <= 10, "entries {}", c.entry_count());
        assert!(c.entry_count() > 0);
    }

    #[tokio::test]
    async fn large_documents_are_evicted_by_their_bytes() {
        const MAX: u64 = 1024 * 1024;
        let c = cache_of_bytes(MAX);
        // Small documents: many fit (the floor is 1 MiB / 10,000 entries).
        let small: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
        for id in &small {
            c.put(*id, RunDoc::Status, doc(1, 1, true)).await;
        }
        c.inner.run_pending_tasks().await;
        assert_eq!(c.entry_count(), 50);
        // Lineages of 1,000 attempts (~100 KB each): 40 of them are 4 MiB,
        // four times the bound; what stays is within it.
        let one = lineage(1_000);
        assert!(one.bytes > 90_000, "{} bytes", one.bytes);
        for _ in 0..40 {
            c.put(Uuid::new_v4(), RunDoc::Lineage, one.clone()).await;
            c.inner.run_pending_tasks().await;
        }
        assert!(
            c.weighted_bytes() <= MAX,
            "{} bytes cached, bound {MAX}",
            c.weighted_bytes()
        );
        assert!(c.entry_count() < 50 + 40, "{} entries", c.entry_count());
        // One lineage heavier than the whole cache (20,000 attempts) is not kept.
        let huge = lineage(20_000);
        assert!(huge.bytes as u64 > MAX);
        let run = Uuid::new_v4();
        c.put(run, RunDoc::Lineage, huge).await;
        c.inner.run_pending_tasks().await;
        assert!(c.get(run, RunDoc::Lineage, None).await.is_none());
        assert!(c.weighted_bytes() <= MAX);
    }

    #[test]
    fn an_entry_weighs_its_bytes_but_at_least_the_floor() {
        let small = doc(1, 1, true);
        assert_eq!(weight(&small, 1), small.bytes as u32);
        assert_eq!(weight(&small, 6_710), 6_710);
        let big = lineage(100);
        assert_eq!(weight(&big, 6_710), big.bytes as u32);
        let mut absurd = doc(1, 1, true);
        absurd.bytes = usize::MAX;
        assert_eq!(weight(&absurd, 1), u32::MAX);
    }

    /// Records counters and gauges as `name{k=v,..}` -> value (gauges as
    /// f64 bits).
    #[derive(Default)]
    struct TestRecorder(Mutex<HashMap<String, Arc<AtomicU64>>>);

    impl TestRecorder {
        fn cell(&self, key: &Key) -> Arc<AtomicU64> {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            self.0.lock().unwrap().entry(name).or_default().clone()
        }
        fn get(&self, name: &str) -> u64 {
            let map = self.0.lock().unwrap();
            map.get(name).map_or(0, |v| v.load(Ordering::Relaxed))
        }
    }

    impl metrics::Recorder for TestRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.cell(key))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.cell(key))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn metrics_hits_misses_evictions() {
        const MISS: &str = "swf_cache_misses_total{cache=test,reason=";
        const EVICT: &str = "swf_cache_evictions_total{cache=test,cause=";
        let rec = TestRecorder::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let entries = || f64::from_bits(rec.get("swf_cache_entries{cache=test}"));
        metrics::with_local_recorder(&rec, || {
            rt.block_on(async {
                let c = cache(Duration::from_millis(50), 100);
                let run = Uuid::new_v4();
                let newer = Token {
                    epoch: 1,
                    lsn: Lsn(2),
                };
                c.get(run, RunDoc::Status, None).await; // absent
                c.put(run, RunDoc::Status, doc(1, 1, false)).await;
                c.put(run, RunDoc::Status, doc(1, 1, false)).await; // replaced
                c.get(run, RunDoc::Status, None).await; // hit
                c.get(run, RunDoc::Status, Some(&newer)).await; // stale_token
                assert_eq!(rec.get("swf_cache_hits_total{cache=test}"), 1);
                assert_eq!(rec.get(&format!("{MISS}absent}}")), 1);
                assert_eq!(rec.get(&format!("{MISS}stale_token}}")), 1);
                assert_eq!(entries(), 1.0);
                c.put(run, RunDoc::Lineage, doc(1, 1, true)).await;
                c.put(run, RunDoc::Lineage, doc(1, 0, true)).await; // older: kept
                assert_eq!(entries(), 2.0);
                c.invalidate(run).await; // explicit: not an eviction
                assert_eq!(entries(), 0.0);
                c.put(run, RunDoc::Status, doc(1, 1, false)).await;
                assert_eq!(entries(), 1.0);
                // Expired entries are removed by moka's maintenance on its ~1 s
                // timer wheel; poll it.
                let deadline = Instant::now() + Duration::from_secs(5);
                while rec.get(&format!("{EVICT}expired}}")) == 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    c.inner.run_pending_tasks().await;
                }
            })
        });
        assert_eq!(rec.get(&format!("{EVICT}expired}}")), 1);
        assert_eq!(rec.get(&format!("{EVICT}explicit}}")), 0);
        assert_eq!(rec.get(&format!("{EVICT}replaced}}")), 0);
        assert_eq!(rec.get(&format!("{EVICT}size}}")), 0);
        assert_eq!(entries(), 0.0);
    }

    #[test]
    fn entries_gauge_matches_count_after_size_evictions() {
        let rec = TestRecorder::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (gauge, count) = metrics::with_local_recorder(&rec, || {
            rt.block_on(async {
                let c = cache(Duration::from_secs(60), 10);
                for i in 0..100 {
                    let d = doc(1, 1, i % 2 == 0);
                    c.put(Uuid::new_v4(), RunDoc::Status, d).await;
                }
                c.inner.run_pending_tasks().await;
                let g = f64::from_bits(rec.get("swf_cache_entries{cache=test}"));
                (g, c.entry_count())
            })
        });
        assert_eq!(gauge, count as f64);
        assert!(rec.get("swf_cache_evictions_total{cache=test,cause=size}") >= 90);
    }

    /// Counts this thread's live heap bytes and allocations (on top of the
    /// system allocator), so a test can see what a parsed document holds.
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        pub struct Counting;

        thread_local! {
            static LIVE: Cell<(isize, isize)> = const { Cell::new((0, 0)) };
        }

        fn add(bytes: isize, allocations: isize) {
            let _ = LIVE.try_with(|c| {
                let (b, n) = c.get();
                c.set((b + bytes, n + allocations));
            });
        }

        /// This thread's live (bytes, allocations).
        pub fn live() -> (isize, isize) {
            LIVE.try_with(|c| c.get()).unwrap_or((0, 0))
        }

        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                add(layout.size() as isize, 1);
                unsafe { System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                add(-(layout.size() as isize), -1);
                unsafe { System.dealloc(ptr, layout) }
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
                add(new as isize - layout.size() as isize, 0);
                unsafe { System.realloc(ptr, layout, new) }
            }
        }

        #[global_allocator]
        static COUNTING: Counting = Counting;
    }

    #[test]
    fn an_entry_weighs_what_its_parsed_document_holds_in_memory() {
        let attempt = |i: usize| {
            json!({"attempt": i, "node_id": "eu-west-1", "region": "eu-west", "pool": "default",
                   "started_at": "2026-12-05T05:11:11.81014+00:00",
                   "finished_at": "2026-12-05T05:11:11.839613+00:00",
                   "outcome": "failed", "error": {"message": format!("boom {i}")}})
        };
        let step = |i: usize, attempts: usize| {
            json!({"id": format!("step-{i}"), "status": "completed", "handler": "echo",
                   "depends_on": [format!("step-{}", i.saturating_sub(1))],
                   "attempts": (0..attempts).map(attempt).collect::<Vec<_>>(),
                   "input": {"n": i}, "output": {"deps": {"a": null}, "n": i}})
        };
        let run = |steps: usize, attempts: usize| {
            json!({"run_id": "01a2449d-08c1-77c8-9f5f-6eece4247b31", "status": "completed",
                   "goal": "demo", "created_at": "2026-12-05T05:11:11.81014+00:00",
                   "steps": (0..steps).map(|i| step(i, attempts)).collect::<Vec<_>>()})
        };
        let docs = [
            ("a 1-step status", run(1, 0)),
            ("a 20-step lineage", run(20, 3)),
            (
                "a map's 2,000 outputs",
                json!({"output": (0..2000).map(|i| json!({"item": i, "ok": true})).collect::<Vec<_>>()}),
            ),
            (
                "a wide object",
                json!((0..300)
                    .map(|i| (format!("key-{i}"), json!(i)))
                    .collect::<serde_json::Map<_, _>>()),
            ),
        ];
        for (what, v) in docs {
            let text = v.to_string();
            let (bytes0, n0) = counting::live();
            let parsed = Arc::new(serde_json::from_str::<serde_json::Value>(&text).unwrap());
            let (bytes1, n1) = counting::live();
            let held = (bytes1 - bytes0 + PER_ALLOCATION as isize * (n1 - n0)) as f64;
            let weighed = held_bytes(&parsed) as f64;
            assert!(
                (0.8..1.25).contains(&(weighed / held)),
                "{what}: weighed {weighed} bytes, holds {held} ({} bytes of text)",
                text.len()
            );
            // The text is far lighter than what the parsed document holds.
            assert!(
                held > 1.5 * text.len() as f64,
                "{what}: {held} vs text {}",
                text.len()
            );
            drop(parsed);
        }
    }
}
