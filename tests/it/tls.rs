//! TLS end to end: HTTPS APIs, node-to-node forwarding verified against a
//! CA with mutual TLS, database links with `sslmode=verify-full`, bad
//! certificates refused, and certificate reload on SIGHUP.

use serde_json::json;
use singularity_workflow::api::client::ApiClient;
use singularity_workflow::api::tls::ClientTls;
use singularity_workflow::config::Config;
use singularity_workflow::dev::pki::DevPki;
use singularity_workflow::executor::handlers::Registry;
use singularity_workflow::node::Node;

use crate::harness::*;

/// Serve HTTPS with `pki`'s certificate and verify peers against its CA.
fn secure(c: &mut Config, pki: &DevPki) {
    c.api.tls_cert = Some(pki.cert.clone());
    c.api.tls_key = Some(pki.key.clone());
    c.api.peer_ca = Some(pki.ca_cert.clone());
}

/// An HTTP client trusting `ca`, presenting `identity` if given.
fn client(ca: &DevPki, identity: Option<&DevPki>) -> ApiClient {
    let tls = ClientTls::from_files(
        Some(&ca.ca_cert),
        identity.map(|i| (i.cert.as_path(), i.key.as_path())),
        ("ca", "cert", "key"),
    )
    .expect("client TLS");
    ApiClient::builder("")
        .tls(&tls)
        .timeout(std::time::Duration::from_secs(10))
        .build()
}

/// Whether a GET of /health succeeds with this client.
async fn reachable(api: &ApiClient, base: &str) -> Result<u16, String> {
    match api.at(base).health().await {
        Ok(a) => Ok(a.status),
        Err(e) => Err(e.to_string()),
    }
}

async fn ssl_of_node_connections(url: &str) -> Vec<bool> {
    let pool = sql(url).await;
    let rows: Vec<bool> = sqlx::query_scalar(
        "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.application_name = 'swf' AND a.datname = current_database()",
    )
    .fetch_all(&pool)
    .await
    .expect("pg_stat_ssl");
    pool.close().await;
    rows
}

#[tokio::test]
async fn https_mutual_tls_forwarding_and_verify_full_database_links() {
    let pki = pki();
    let rogue = rogue_pki();
    let db = fresh_db().await;
    let eu_db = replica_url(&db);
    wait_db(&eu_db).await;
    let (mut us, mut eu) = two_regions(&tls_url(&db, &pki.ca_cert), &tls_url(&eu_db, &pki.ca_cert));
    for c in [&mut us, &mut eu] {
        secure(c, &pki);
        // Mutual TLS: callers, nodes included, present a certificate of the CA.
        c.api.client_ca = Some(pki.ca_cert.clone());
    }
    let us = start_node(us, Registry::with_builtins()).await;
    let eu = start_node(eu, Registry::with_builtins()).await;
    assert!(us.url().starts_with("https://"), "{}", us.url());

    let good = client(&pki, Some(&pki));
    assert_eq!(reachable(&good, &us.url()).await, Ok(200));
    // No client certificate, one from another CA, a server certificate
    // from a CA the client does not trust, and plain HTTP: all refused.
    let err = reachable(&client(&pki, None), &us.url()).await.unwrap_err();
    assert!(!err.is_empty());
    reachable(&client(&pki, Some(&rogue)), &us.url())
        .await
        .unwrap_err();
    let err = reachable(&client(&rogue, Some(&pki)), &us.url())
        .await
        .unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    let plain = us.url().replace("https://", "http://");
    reachable(&ApiClient::new(""), &plain).await.unwrap_err();

    // Submitted in eu-west over HTTPS: the write crosses a verify-full
    // database link to the primary and runs to completion.
    let eu_api = Api::with_client(good.at(&eu.url()));
    let run_id = eu_api
        .submit(&json!({"goal": "tls", "steps": [{"id": "a", "handler": "noop"}]}))
        .await;
    assert_eq!(
        eu_api.wait_terminal(&run_id, 30).await["status"],
        "completed"
    );

    // A call pinned to us-east is forwarded node to node over mutual TLS.
    let api = eu_api.clone();
    let id = run_id.clone();
    let served_by = wait_for("a forwarded call over TLS", 30, move || {
        let api = api.clone();
        let id = id.clone();
        async move {
            let a = api.get_in("us-east", &format!("/v1/workflows/{id}")).await;
            (a.status == 200).then(|| a.header("swf-served-by").unwrap_or("").to_string())
        }
    })
    .await;
    assert_eq!(served_by, "us-east-1");

    // Every database connection of both nodes is encrypted.
    for url in [&db, &eu_db] {
        let ssl = ssl_of_node_connections(url).await;
        assert!(!ssl.is_empty() && ssl.iter().all(|s| *s), "{url}: {ssl:?}");
    }
    let mut us = us;
    let mut eu = eu;
    eu.shutdown().await;
    us.shutdown().await;
}

#[tokio::test]
async fn certificates_from_another_ca_are_refused_and_change_nothing() {
    let pki = pki();
    let rogue = rogue_pki();
    let db = fresh_db().await;
    let eu_db = replica_url(&db);
    wait_db(&eu_db).await;

    // A database presenting a certificate the node does not trust: the node
    // refuses to start, naming the certificate problem.
    let mut c = node_config("distrustful-1", &tls_url(&db, &rogue.ca_cert));
    c.executor.heartbeat_interval_ms = 200;
    let err = Node::start(c, Registry::with_builtins())
        .await
        .err()
        .expect("a node must not trust the database's unknown CA");
    let msg = format!("{err:#}");
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");

    // us-east serves a certificate of the rogue CA; eu-west trusts only
    // the real CA, so it will not forward to us-east.
    let (mut us, mut eu) = two_regions(&db, &eu_db);
    secure(&mut us, &rogue);
    secure(&mut eu, &pki);
    let us = start_node(us, Registry::with_builtins()).await;
    let eu = start_node(eu, Registry::with_builtins()).await;
    let eu_api = Api::with_client(client(&pki, None).at(&eu.url()));
    // Wait until eu-west knows us-east's node (from its heartbeat).
    let api = eu_api.clone();
    wait_for("eu-west to see the us-east node", 30, move || {
        let api = api.clone();
        async move {
            let r = api.get("/v1/regions").await.body;
            r.to_string().contains("us-east-1").then_some(())
        }
    })
    .await;
    let before = stored(&db).await;
    let wf = json!({"goal": "pinned", "steps": [{"id": "a", "handler": "noop"}]});
    let a = eu_api.post_in("us-east", "/v1/workflows", &wf).await;
    assert_eq!(
        (a.status, a.code()),
        (503, "region_unavailable"),
        "{}",
        a.body
    );
    let msg = a.body["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("certificate"), "{msg}");
    assert_eq!(stored(&db).await, before, "a refused forward stored a run");
    // A client trusting the real CA refuses the rogue node too.
    let err = reachable(&client(&pki, None), &us.url()).await.unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    let mut us = us;
    let mut eu = eu;
    eu.shutdown().await;
    us.shutdown().await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_a_bad_one_keeps_the_old() {
    let pki = pki();
    let rogue = rogue_pki();
    let dir = std::env::temp_dir().join(format!("swf-reload-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let served = DevPki {
        ca_cert: pki.ca_cert.clone(),
        cert: dir.join("api.pem"),
        key: dir.join("api.key"),
    };
    let install = |from: &DevPki| {
        std::fs::copy(&from.cert, &served.cert).unwrap();
        std::fs::copy(&from.key, &served.key).unwrap();
    };
    install(&pki);
    let mut c = node_config("reload-1", &fresh_db().await);
    secure(&mut c, &served);
    let node = start_node(c, Registry::with_builtins()).await;
    let url = node.url();
    assert_eq!(reachable(&client(&pki, None), &url).await, Ok(200));
    reachable(&client(&rogue, None), &url).await.unwrap_err();

    // A renewed certificate (here: one from another CA) and SIGHUP: new
    // connections get the new certificate without a restart.
    install(&rogue);
    unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    let u = url.clone();
    let r = rogue.clone();
    wait_for("the reloaded certificate", 30, move || {
        let u = u.clone();
        let r = r.clone();
        async move { reachable(&client(&r, None), &u).await.ok() }
    })
    .await;
    reachable(&client(&pki, None), &url).await.unwrap_err();

    // A broken file: the reload fails with a clear error, the node keeps
    // serving the certificate it has.
    std::fs::write(&served.cert, "not a certificate").unwrap();
    let err = node.reload_tls().unwrap_err().to_string();
    assert!(err.contains("api.tls_cert"), "{err}");
    assert_eq!(reachable(&client(&rogue, None), &url).await, Ok(200));
    let mut node = node;
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
