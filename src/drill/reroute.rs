//! Which nodes a drill drives and waits for: the healthy nodes by the
//! heartbeat rule of `/v1/regions`, and their re-routing to the new primary.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::api::client::ApiClient;
use crate::router::Router;

/// API URLs of the healthy client nodes (the load's targets), and of all
/// healthy nodes (to re-route), by the same heartbeat rule as `/v1/regions`.
pub(super) async fn node_urls(
    router: &Router,
    heartbeat_ms: u64,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let nodes = router.write_store().nodes().await?;
    let healthy: Vec<_> = nodes
        .into_iter()
        .filter(|n| n.is_healthy(heartbeat_ms))
        .collect();
    let clients = healthy
        .iter()
        .filter(|n| n.is_client())
        .filter_map(|n| n.api_url.clone())
        .collect();
    let all = healthy.into_iter().filter_map(|n| n.api_url).collect();
    Ok((clients, all))
}

/// Waits (15 s at most) until every node reports the new write region and
/// epoch; answers (nodes re-routed, nodes asked).
pub(super) async fn wait_rerouted(
    urls: &[String],
    to: &str,
    epoch: u64,
    authorization: Option<&reqwest::header::HeaderValue>,
    tls: &crate::api::tls::ClientTls,
) -> (usize, usize) {
    let api = ApiClient::builder("")
        .tls(tls)
        .authorization(authorization.cloned())
        .timeout(Duration::from_secs(2))
        .build();
    let done = AtomicUsize::new(0);
    let _ = crate::wait::until(Duration::from_secs(15), Duration::from_millis(20), || {
        let api = &api;
        let done = &done;
        async move {
            let mut n = 0;
            for u in urls {
                if let Ok(info) = api.at(u).health_info().await {
                    if info.body.write_region == to && info.body.epoch >= epoch {
                        n += 1;
                    }
                }
            }
            done.store(n, Ordering::Relaxed);
            (n == urls.len()).then_some(())
        }
    })
    .await;
    (done.load(Ordering::Relaxed), urls.len())
}
