//! Database administration for dev clusters and tests (cargo feature `dev`):
//! creating databases, reloading a server's configuration and filling a
//! benchmark's history. Each is a named operation; no caller passes SQL text.

use super::conn::{Result, Store};

/// `name` as a quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Store {
    /// True when a database of this name exists on the server.
    pub async fn database_exists(&self, name: &str) -> Result<bool> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Creates an empty database `name` on this server.
    pub async fn create_database(&self, name: &str) -> Result<()> {
        sqlx::raw_sql(&format!("CREATE DATABASE {}", ident(name)))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Creates database `name` as a copy of database `template` (which no
    /// session may be connected to meanwhile).
    pub async fn create_database_from_template(&self, name: &str, template: &str) -> Result<()> {
        sqlx::raw_sql(&format!(
            "CREATE DATABASE {} TEMPLATE {}",
            ident(name),
            ident(template)
        ))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Makes the server re-read its configuration files (e.g. a replica's
    /// new `primary_conninfo`).
    pub async fn reload_config(&self) -> Result<()> {
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Inserts `n` finished 1-step runs (run, step and one completed
    /// attempt each, as the engine leaves them) in statements of at most
    /// 100,000 runs: history for `swf bench --burn-down --history`. Their
    /// times are spread over the last `n` × 10 ms, so retention's default
    /// cutoff (7 days) keeps them for a million of them.
    pub async fn fill_history(&self, n: u64, region: &str) -> Result<()> {
        const CHUNK: u64 = 100_000;
        let mut done = 0;
        while done < n {
            let k = CHUNK.min(n - done);
            sqlx::query(
                "WITH r AS (
                     INSERT INTO swf.runs (run_id, goal, status, output, submitted_by,
                                           submitted_region, remaining_steps, created_at,
                                           completed_at)
                     SELECT gen_random_uuid(), 'history', 'completed', '{\"s\": null}',
                            'bench-history', $3, 0, t, t
                       FROM (SELECT now() - make_interval(secs => ($2 + g) / 100.0) AS t
                               FROM generate_series(1, $1) AS g) x
                     RETURNING run_id, created_at),
                 s AS (
                     INSERT INTO swf.steps (run_id, step_id, ordinal, handler, queue, mq,
                                            max_attempts, timeout_ms, status, remaining_deps,
                                            attempts, started_at, completed_at)
                     SELECT run_id, 's', 1, 'noop', 'default', 'default', 3, 30000,
                            'completed', 0, 1, created_at, created_at
                       FROM r
                     RETURNING run_id, started_at)
                 INSERT INTO swf.attempts (run_id, step_id, attempt, node_id, region,
                                           worker_pool, started_at, finished_at, outcome)
                 SELECT run_id, 's', 1, 'bench-history', $3, 'default', started_at,
                        started_at, 'completed'
                   FROM s",
            )
            .bind(k as i64)
            .bind(done as i64)
            .bind(region)
            .execute(&self.pool)
            .await?;
            done += k;
        }
        sqlx::query("VACUUM ANALYZE swf.runs, swf.steps, swf.attempts")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Writes every dirty buffer out now (`CHECKPOINT`), so that a timed
    /// phase that follows does not share the disk with one, nor log the
    /// first change of each page in full.
    pub async fn checkpoint(&self) -> Result<()> {
        sqlx::query("CHECKPOINT").execute(&self.pool).await?;
        Ok(())
    }
}
