//! `GET /openapi.json` (DESIGN 10.3): served by a node, OpenAPI 3.1 that a
//! real validator accepts, with the wire types' schemas in it.

use singularity_workflow::executor::handlers::Registry;

use crate::harness::*;

#[tokio::test]
async fn the_openapi_document_is_served_and_passes_a_real_validator() {
    let db = fresh_db().await;
    let node = start_node(node_config("openapi-1", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let a = api.get("/openapi.json").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["openapi"], "3.1.0");
    assert!(
        a.body["paths"]["/v1/workflows/{run_id}/signals/{name}"]["post"]["requestBody"].is_object(),
        "{}",
        a.body["paths"]
    );
    let file = std::env::temp_dir().join(format!("swf-openapi-{}.json", std::process::id()));
    std::fs::write(&file, a.body.to_string()).unwrap();
    // openapi-spec-validator (PyPI; `.ci/run` installs it when missing).
    let out = tokio::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .await
        .expect("run python3");
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&file);
    node.kill().await;
}
