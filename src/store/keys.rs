//! The cluster's token key (`swf.token_keys`, created by a migration with
//! real randomness and replicated to every replica): read once when a node
//! starts; tokens are signed and verified in memory (`model::token`).

use super::conn::{Result, Store, StoreError};
use crate::model::token::TokenKey;

impl Store {
    /// The key consistency tokens are signed with: the highest `key_id`.
    /// A replica has it too (it replicates).
    pub async fn token_key(&self) -> Result<TokenKey> {
        let secret: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT secret FROM swf.token_keys ORDER BY key_id DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        let secret = secret.ok_or_else(|| {
            StoreError::Database("swf.token_keys holds no key: run `swf migrate`".into())
        })?;
        TokenKey::new(&secret).ok_or_else(|| {
            StoreError::Database(format!(
                "the token key in swf.token_keys is {} bytes, fewer than {}",
                secret.len(),
                TokenKey::MIN_SECRET_BYTES
            ))
        })
    }
}
