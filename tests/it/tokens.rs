//! Signed consistency tokens: a token a node handed out, altered in any
//! way (epoch, LSN, MAC), made up, or from before tokens were signed, is
//! refused with 400 `invalid_token` on every read and on a pinned call,
//! and changes nothing: not the node's epoch, not the cache, not writes.
//! The key behind them is random per database and survives an upgrade.

use serde_json::{json, Value};
use singularity_workflow::executor::handlers::Registry;
use singularity_workflow::model::token::{Lsn, Token, TokenKey};
use singularity_workflow::store::Store;

use crate::harness::*;

/// A run that stays running on nodes without executors.
fn one_step(goal: &str) -> Value {
    json!({"goal": goal, "steps": [{"id": "a", "handler": "noop"}]})
}

/// GET `path` with `swf-consistency-token: token` (and more headers).
async fn get_with_token(api: &Api, path: &str, token: &str, more: &[(&str, &str)]) -> Answer {
    let mut r = api
        .http
        .get(format!("{}{path}", api.base))
        .header("swf-consistency-token", token);
    for (k, v) in more {
        r = r.header(*k, *v);
    }
    api.send(r).await
}

/// Submits through `api`; returns the run id and the token the write answered.
async fn submit(api: &Api, wf: &Value) -> (String, String) {
    let a = api.post("/v1/workflows", wf).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let token = a.body["consistency_token"].as_str().unwrap().to_string();
    assert_eq!(a.header("swf-consistency-token"), Some(token.as_str()));
    (a.body["run_id"].as_str().unwrap().to_string(), token)
}

/// The epoch, the LSN text and the MAC of a token as nodes write it.
fn parts(token: &str) -> (u64, String, String) {
    let (position, mac) = token.split_once('.').expect("a signed token");
    let (epoch, lsn) = position.split_once('-').expect("<epoch>-<lsn>");
    (epoch.parse().unwrap(), lsn.to_string(), mac.to_string())
}

/// Variants of a real token that no node signed: its epoch or LSN changed
/// with the MAC kept, the MAC dropped (a token from before signing, or made
/// up), the MAC changed, and a MAC made with another key.
fn forgeries(real: &str) -> Vec<String> {
    let (epoch, lsn, mac) = parts(real);
    let mut flipped = mac.clone().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let other_key = TokenKey::new(b"not the cluster's key, 32 bytes!").unwrap();
    let high = Token {
        epoch,
        lsn: Lsn(u64::MAX),
    };
    vec![
        format!("{}-{lsn}.{mac}", epoch + 1),
        format!("999999-{lsn}.{mac}"),
        format!("{epoch}-FFFFFFFF/FFFFFFFF.{mac}"),
        format!("{epoch}-{lsn}"),
        format!("{epoch}-FFFFFFFF/FFFFFFFF"),
        "999999-0/0".to_string(),
        format!("{epoch}-{lsn}.{}", String::from_utf8(flipped).unwrap()),
        other_key.sign(&high),
        "garbage".to_string(),
    ]
}

#[tokio::test]
async fn an_altered_or_made_up_token_is_refused_and_changes_nothing() {
    let db = fresh_db().await;
    let node = start_node(node_config("tokens-1", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let (run, real) = submit(&api, &one_step("before")).await;
    api.wait_terminal(&run, 30).await;
    let epoch = api.get("/health/info").await.body["epoch"].clone();
    assert_eq!(parts(&real).0, epoch.as_u64().unwrap());
    let stored_before = stored(&db).await;
    for forged in forgeries(&real) {
        for path in [
            format!("/v1/workflows/{run}"),
            format!("/v1/workflows/{run}/lineage"),
            "/v1/workflows".to_string(),
        ] {
            let a = get_with_token(&api, &path, &forged, &[]).await;
            assert_eq!(
                (a.status, a.code()),
                (400, "invalid_token"),
                "GET {path} with {forged}: {}",
                a.body
            );
        }
    }
    // Nothing moved: the epoch, what is stored; writes and the executor go on.
    assert_eq!(api.get("/health/info").await.body["epoch"], epoch);
    assert_eq!(stored(&db).await, stored_before);
    let (after, token) = submit(&api, &one_step("after")).await;
    assert_eq!(api.wait_terminal(&after, 30).await["status"], "completed");
    // Real tokens, old and new, are served.
    for t in [&real, &token] {
        let a = get_with_token(&api, &format!("/v1/workflows/{after}"), t, &[]).await;
        assert_eq!(a.status, 200, "{t}: {}", a.body);
    }
    node.kill().await;
}

#[tokio::test]
async fn a_forged_high_token_cannot_make_the_cache_serve_stale_reads() {
    // Two nodes on one database, no executors: runs stay running until
    // cancelled, and a cancel through one node leaves the other's cache.
    let db = fresh_db().await;
    let mut nodes = Vec::new();
    for id in ["cache-a", "cache-b"] {
        let mut c = node_config(id, &db);
        c.enable_executor = false;
        c.worker_pools.clear();
        nodes.push(start_node(c, Registry::with_builtins()).await);
    }
    let (a, b) = (Api::new(&nodes[0].url()), Api::new(&nodes[1].url()));
    let (run, real) = submit(&a, &one_step("stays running")).await;
    let (epoch, _, mac) = parts(&real);
    let path = format!("/v1/workflows/{run}");
    // A token of the real epoch claiming a position past every write, with
    // or without the MAC of a real one, is refused: it would mark the
    // entry it caches as newer than anything ever written.
    for forged in [
        format!("{epoch}-FFFFFFFF/FFFFFFFF"),
        format!("{epoch}-FFFFFFFF/FFFFFFFF.{mac}"),
    ] {
        let r = get_with_token(&a, &path, &forged, &[]).await;
        assert_eq!((r.status, r.code()), (400, "invalid_token"), "{forged}");
    }
    // Reads with and without the real token cache the run as running.
    let r = get_with_token(&a, &path, &real, &[]).await;
    assert_eq!((r.status, &r.body["status"]), (200, &json!("running")));
    assert_eq!(a.get(&path).await.body["status"], "running");
    // Cancelled through the other node: a read on the first with the cancel's
    // token sees it (the cached entry is only as new as the database was).
    let c = b.post(&format!("{path}/cancel"), &json!({})).await;
    assert_eq!(c.status, 200, "{}", c.body);
    let cancel_token = c.body["consistency_token"].as_str().unwrap();
    let r = get_with_token(&a, &path, cancel_token, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "cancelled", "stale read from the cache");
    for n in nodes {
        n.kill().await;
    }
}

#[tokio::test]
async fn a_pinned_call_with_a_forged_token_is_refused_where_it_arrives() {
    let db = fresh_db().await;
    let eu_db = replica_url(&db);
    wait_db(&eu_db).await;
    let (us, eu) = two_regions(&db, &eu_db);
    let us = start_node(us, Registry::with_builtins()).await;
    // The eu-west node loads the key from its replica.
    let eu = start_node(eu, Registry::with_builtins()).await;
    let (us_api, eu_api) = (Api::new(&us.url()), Api::new(&eu.url()));
    wait_for("us-east's heartbeat in eu-west", 30, || {
        let api = eu_api.clone();
        async move {
            let r = api.get("/v1/regions").await.body;
            (r["regions"][0]["nodes"][0]["healthy"] == true).then_some(())
        }
    })
    .await;
    // A token signed in us-east is honoured in eu-west, and pinned to us-east.
    let (run, real) = submit(&us_api, &one_step("pinned")).await;
    let path = format!("/v1/workflows/{run}");
    let r = get_with_token(&eu_api, &path, &real, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let pin = [("swf-region", "us-east")];
    let r = get_with_token(&eu_api, &path, &real, &pin).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("swf-served-by"), Some("us-east-1"));
    let epochs = || async {
        (
            us_api.get("/health/info").await.body["epoch"].clone(),
            eu_api.get("/health/info").await.body["epoch"].clone(),
        )
    };
    let before = epochs().await;
    // Forged: refused by eu-west before it is forwarded.
    for forged in forgeries(&real) {
        for p in [path.clone(), "/v1/workflows".to_string()] {
            let r = get_with_token(&eu_api, &p, &forged, &pin).await;
            assert_eq!(
                (r.status, r.code()),
                (400, "invalid_token"),
                "pinned GET {p} with {forged}: {}",
                r.body
            );
            assert_eq!(r.header("swf-served-by"), Some("eu-west-1"), "{forged}");
        }
    }
    assert_eq!(epochs().await, before);
    let (after, _) = submit(&eu_api, &one_step("after")).await;
    assert_eq!(
        us_api.wait_terminal(&after, 30).await["status"],
        "completed"
    );
    us.kill().await;
    eu.kill().await;
}

/// A token of epoch 1 at LSN 0/100, as `key` signs it.
fn probe(key: &TokenKey) -> String {
    key.sign(&Token {
        epoch: 1,
        lsn: Lsn(0x100),
    })
}

#[tokio::test]
async fn every_database_gets_a_random_token_key_also_on_upgrade() {
    const PREVIOUS_SCHEMA: i64 = 20261203000001;
    let admin = Store::connect_lazy(&pg_url("postgres"), 1).unwrap();
    let mut keys = Vec::new();
    for upgrade in [false, true] {
        let name = format!("k_{}", uuid::Uuid::new_v4().simple());
        admin.create_database(&name).await.unwrap();
        let store = Store::connect_lazy(&pg_url(&name), 2).unwrap();
        if upgrade {
            // A database of the previous schema has no key until it migrates.
            store.migrate_to(PREVIOUS_SCHEMA).await.unwrap();
            assert!(store.token_key().await.is_err());
        }
        store.migrate().await.unwrap();
        let key = store.token_key().await.unwrap();
        // Loaded again (a restart), it is the same key.
        assert_eq!(probe(&store.token_key().await.unwrap()), probe(&key));
        keys.push(probe(&key));
        store.close().await;
    }
    admin.close().await;
    assert_ne!(keys[0], keys[1], "two databases share a token key");
    // A token one cluster signed does not verify in another.
    let db = fresh_db().await;
    let node = start_node(node_config("other-cluster", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let (run, _) = submit(&api, &one_step("other")).await;
    let r = get_with_token(&api, &format!("/v1/workflows/{run}"), &keys[0], &[]).await;
    assert_eq!((r.status, r.code()), (400, "invalid_token"));
    node.kill().await;
}
