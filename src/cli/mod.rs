//! The `swf` command line: argument parsing ([`args`]), the client
//! commands' calls through the one typed API client ([`commands`]), and their
//! human rendering ([`render`]); `--json` prints the typed answer as JSON.
//! `main.rs` only calls [`main`].

pub mod args;
pub mod commands;
pub mod render;

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

pub use args::{ApiArgs, Cli, Command};
use args::{AuthCommand, ConfigCommand, DrillCommand, QueueAction, ScheduleAction};

use crate::api::wire::{BulkCancelRequest, DrillKind};
use crate::config::{self, Config};
use crate::executor::handlers::Registry;
use crate::node::Node;
use crate::store::Store;
use crate::telemetry;

/// Entry point of the binary: returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format);
    if !cli.command.runs_a_node() {
        // A one-shot command piped into `head` ends quietly when the reader
        // goes, as Unix tools do, instead of panicking on the write. A node
        // keeps SIGPIPE ignored: a handler's child process that exits early
        // must not take the node down.
        // SAFETY: at start, before any thread; SIG_DFL is a valid handler.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

async fn run(cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        #[cfg(feature = "dev")]
        Command::Dev(a) => {
            crate::dev::run(crate::dev::DevOptions {
                data_dir: a.data_dir,
                regions: a.regions,
                base_port: a.base_port,
                wan_latency_ms: a.wan_latency_ms,
                fresh: a.fresh,
                tls: a.tls,
                pool_size: None,
                ha: a.ha,
            })
            .await?;
            Ok(0)
        }
        Command::Serve { config } => {
            let loaded = Config::load(&config)?;
            for w in &loaded.warnings {
                tracing::warn!("{w}");
            }
            let stop = crate::node::signals::shutdown_signal();
            let node = Node::start(loaded.config, Registry::with_builtins()).await?;
            node.run_until(stop).await?;
            Ok(0)
        }
        Command::Migrate { database_url } => {
            let store = Store::connect_lazy(&database_url, 2)?;
            store
                .migrate()
                .await
                .with_context(|| format!("migrate {}", config::redact_url(&database_url)))?;
            let v = store.schema_version().await?;
            println!("database migrated (schema version {})", v.unwrap_or(0));
            Ok(0)
        }
        Command::Config(ConfigCommand::Check { file, json }) => {
            let loaded = Config::load(&file)?;
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            // The TLS files load as the node would load them.
            if let Some(files) = crate::api::tls::ServerTlsFiles::from_config(&loaded.config.api) {
                crate::api::tls::ServerTls::load(files)
                    .with_context(|| format!("{}: TLS", file.display()))?;
            }
            crate::api::tls::ClientTls::for_peers(&loaded.config.api)
                .with_context(|| format!("{}: TLS", file.display()))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&config::check_report(&loaded.config))?
                );
            } else {
                print!("{}", config::check_report_text(&loaded.config));
            }
            Ok(0)
        }
        Command::PatroniCallback {
            database_url,
            region,
            action,
            role,
            ..
        } => commands::patroni_callback(&database_url, &region, &action, &role).await,
        Command::Config(ConfigCommand::Migrate { file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("read {}", file.display()))?;
            let out = config::migrate_legacy(&text, &file.display().to_string())?;
            print!("{out}{}", if out.ends_with('\n') { "" } else { "\n" });
            Ok(0)
        }
        Command::Submit {
            api,
            file,
            batch: false,
        } => commands::submit(&api, &file).await,
        Command::Submit {
            api,
            file,
            batch: true,
        } => commands::submit_batch(&api, &file).await,
        Command::Status {
            api,
            run_id,
            wait,
            timeout_secs,
        } => commands::status(&api, &run_id, wait, Duration::from_secs(timeout_secs)).await,
        Command::Lineage { api, run_id } => commands::lineage(&api, &run_id).await,
        Command::Regions { api } => commands::regions(&api).await,
        Command::Retry { api, run_id } => commands::retry(&api, &run_id).await,
        Command::Pause { api, run_id } => commands::set_run_paused(&api, &run_id, true).await,
        Command::Resume { api, run_id } => commands::set_run_paused(&api, &run_id, false).await,
        Command::Signal {
            api,
            run_id,
            name,
            payload,
        } => commands::signal(&api, &run_id, &name, payload.as_deref()).await,
        Command::Runs {
            api,
            status,
            limit,
            after,
        } => commands::runs(&api, status, limit, after).await,
        Command::Cancel {
            api,
            run_id,
            status,
            goal,
            created_after,
            created_before,
        } => match (run_id, status) {
            (Some(id), _) => commands::cancel(&api, &id).await,
            (None, Some(status)) => {
                let req = BulkCancelRequest {
                    status,
                    goal,
                    created_after,
                    created_before,
                };
                commands::cancel_many(&api, &req).await
            }
            (None, None) => bail!("name a run to cancel, or --status for a bulk cancel"),
        },
        Command::Schedules { api, action } => match action {
            ScheduleAction::List => commands::schedules(&api).await,
            ScheduleAction::Create { file } => commands::create_schedule(&api, &file).await,
            ScheduleAction::Delete { name } => commands::delete_schedule(&api, &name).await,
            ScheduleAction::Pause { name } => {
                commands::set_schedule_paused(&api, &name, true).await
            }
            ScheduleAction::Resume { name } => {
                commands::set_schedule_paused(&api, &name, false).await
            }
        },
        Command::Queues { api, action } => match action {
            None => commands::queues(&api).await,
            Some(QueueAction::Pause { name }) => {
                commands::set_queue_paused(&api, &name, true).await
            }
            Some(QueueAction::Resume { name }) => {
                commands::set_queue_paused(&api, &name, false).await
            }
        },
        #[cfg(feature = "dev")]
        Command::Bench(args) => crate::dev::bench::run(args).await,
        Command::Drill(DrillCommand::Switchover(a)) => {
            commands::drill(DrillKind::Switchover, a).await
        }
        Command::Drill(DrillCommand::Failover(a)) => commands::drill(DrillKind::Failover, a).await,
        Command::Drill(DrillCommand::Partition(a)) => commands::partition(a).await,
        Command::Drill(DrillCommand::List { api }) => commands::drill_list(&api).await,
        Command::Drill(DrillCommand::Recover { api }) => commands::drill_recover(&api).await,
        Command::Auth(AuthCommand::HashToken) => {
            let mut t = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut t).context("read stdin")?;
            let t = t.trim();
            if t.is_empty() {
                bail!("no token on standard input");
            }
            println!("{}", crate::api::auth::hash_token(t));
            Ok(0)
        }
    }
}
