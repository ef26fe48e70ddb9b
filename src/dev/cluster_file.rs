//! `cluster.json`: what scripts (and drills) need to reach a dev cluster.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// `cluster.json`: what scripts need to reach the dev cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterFile {
    pub write_region: String,
    pub regions: Vec<ClusterRegion>,
    /// With `--tls`: the CA that signed every certificate of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// With `--tls`: the file holding the admin token (mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterRegion {
    pub name: String,
    pub api_url: String,
    pub database_url: String,
    pub role: String,
}

impl ClusterFile {
    /// Makes `region` the write region and the only primary.
    pub fn set_primary(&mut self, region: &str) {
        self.write_region = region.to_string();
        for r in &mut self.regions {
            r.role = if r.name == region {
                "primary"
            } else {
                "replica"
            }
            .into();
        }
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("write {}", path.display()))
    }
}
