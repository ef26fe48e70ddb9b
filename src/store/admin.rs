//! Database administration for dev clusters and tests (cargo feature `dev`):
//! creating databases and reloading a server's configuration. Each is a
//! named operation; no caller passes SQL text.

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
}
