//! `swf bench`: end-to-end load benchmark.

use clap::Args;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Base URL of a node's API; without it, an embedded cluster is started.
    #[arg(long)]
    pub api: Option<String>,
}

pub async fn run(_args: BenchArgs) -> anyhow::Result<i32> {
    anyhow::bail!("swf bench: not built yet")
}
