//! Consistency tokens: the epoch and WAL position of a write, signed by the
//! cluster.
//!
//! Every write answers with a token; a read carrying it must reflect that
//! write. The token's LSN is at or after the end of the write's commit
//! record (read after COMMIT inside the same procedure call), so a replica
//! that has replayed it shows the write.
//!
//! **Signed.** A node hands a token out only with a MAC: HMAC-SHA256 over a
//! domain tag, the epoch and the LSN (8-byte big-endian integers each), keyed
//! with the cluster's token key (a random secret kept in the cluster's
//! database, `swf.token_keys`, so every replica and every node has the same
//! one), truncated to 128 bits. The text form is `<epoch>-<hi>/<lo>.<mac>`,
//! e.g. `1-0/1E859B0.4f1c0e7d2a9b3c5d6e7f8091a2b3c4d5` (the MAC as 32
//! lowercase hex digits); clients treat it as opaque. [`TokenKey::verify`]
//! is the only way text becomes a [`Token`]: it compares the MAC in constant
//! time, so a token whose epoch, LSN or MAC was altered, one made up, one
//! from another cluster and one from before tokens were signed are all
//! refused. A verified token names a position a database of this cluster
//! issued; nothing a caller sends can name any other.
//!
//! This module is pure: the key is fetched by the store (`Store::token_key`)
//! and held by the router.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A PostgreSQL WAL position (`pg_lsn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s.split_once('/').ok_or(TokenError::Malformed)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| TokenError::Malformed)?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| TokenError::Malformed)?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

/// Why a token's text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the form `<epoch>-<hi>/<lo>.<mac>`.
    #[error("malformed consistency token")]
    Malformed,
    /// Well formed, but its MAC is not this cluster's for its epoch and LSN.
    #[error("consistency token not issued by this cluster")]
    NotIssued,
}

/// What a read must at least reflect: a position a database of this cluster
/// issued (read back from a procedure, or verified by [`TokenKey::verify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub epoch: u64,
    pub lsn: Lsn,
}

impl Token {
    /// The one satisfaction rule (the cache, the read plan and token waits
    /// all ask it): true when data read at `epoch` from a database that had
    /// replayed `replayed` is at least as new as this token. A token from
    /// another epoch, older or newer, is never satisfied by LSN alone: LSNs
    /// of different timelines do not compare.
    pub fn satisfied_by(&self, epoch: u64, replayed: Lsn) -> bool {
        self.same_timeline(epoch) && replayed >= self.lsn
    }

    /// True when LSNs of a database at `epoch` compare with this token's, so
    /// replay there can still come to satisfy it.
    pub fn same_timeline(&self, epoch: u64) -> bool {
        self.epoch == epoch
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the MAC a token carries (of HMAC-SHA256's 32).
const MAC_BYTES: usize = 16;
/// Prefixed to what is signed, so a MAC made for anything else never
/// verifies as a token (and a future format gets a new tag).
const DOMAIN: &[u8] = b"swf consistency token v1";

/// The cluster's token key: signs the tokens a node hands out and verifies
/// the ones callers send back, in memory.
#[derive(Clone)]
pub struct TokenKey {
    /// HMAC state keyed once; cloned per token.
    keyed: HmacSha256,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// Shortest secret accepted (the migration creates 32 random bytes).
    pub const MIN_SECRET_BYTES: usize = 16;

    /// A key from its secret; None when the secret is shorter than
    /// [`TokenKey::MIN_SECRET_BYTES`].
    pub fn new(secret: &[u8]) -> Option<TokenKey> {
        if secret.len() < Self::MIN_SECRET_BYTES {
            return None;
        }
        let keyed = HmacSha256::new_from_slice(secret).ok()?;
        Some(TokenKey { keyed })
    }

    fn mac(&self, t: &Token) -> HmacSha256 {
        let mut m = self.keyed.clone();
        m.update(DOMAIN);
        m.update(&t.epoch.to_be_bytes());
        m.update(&t.lsn.0.to_be_bytes());
        m
    }

    /// The token's text form, `<epoch>-<hi>/<lo>.<mac>`.
    pub fn sign(&self, t: &Token) -> String {
        let tag = self.mac(t).finalize().into_bytes();
        let mut out = format!("{}-{}.", t.epoch, t.lsn);
        for b in &tag[..MAC_BYTES] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        out
    }

    /// The position a token's text names, if this cluster signed it. The MAC
    /// is compared in constant time.
    pub fn verify(&self, text: &str) -> Result<Token, TokenError> {
        let (position, mac) = text.trim().split_once('.').ok_or(TokenError::Malformed)?;
        let (epoch, lsn) = position.split_once('-').ok_or(TokenError::Malformed)?;
        if !epoch.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TokenError::Malformed);
        }
        let t = Token {
            epoch: epoch.parse().map_err(|_| TokenError::Malformed)?,
            lsn: lsn.parse()?,
        };
        let tag = unhex(mac).ok_or(TokenError::Malformed)?;
        self.mac(&t)
            .verify_truncated_left(&tag)
            .map_err(|_| TokenError::NotIssued)?;
        Ok(t)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Exactly [`MAC_BYTES`] bytes as hex digits (either case), or None.
fn unhex(s: &str) -> Option<[u8; MAC_BYTES]> {
    let s = s.as_bytes();
    if s.len() != MAC_BYTES * 2 {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; MAC_BYTES];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> TokenKey {
        TokenKey::new(&[seed; 32]).unwrap()
    }

    fn tok(epoch: u64, lsn: u64) -> Token {
        Token {
            epoch,
            lsn: Lsn(lsn),
        }
    }

    #[test]
    fn lsn_text_and_satisfaction() {
        let big: Lsn = "1F/A".parse().unwrap();
        assert_eq!(big.0, (0x1F << 32) | 0xA);
        assert_eq!(Lsn(0x1E859B0).to_string(), "0/1E859B0");
        // (token, db epoch, replayed, satisfied)
        let cases = [
            (tok(1, 0x100), 1, 0x100, true),
            (tok(1, 0x100), 1, 0xFF, false),
            (tok(1, 0x100), 1, 0x200, true),
            (tok(1, 0x100), 2, 0x200, false),
            (tok(2, 0x100), 1, 0x200, false),
        ];
        for (t, epoch, replayed, want) in cases {
            assert_eq!(
                t.satisfied_by(epoch, Lsn(replayed)),
                want,
                "{t:?} {epoch} {replayed}"
            );
        }
    }

    #[test]
    fn a_signed_token_round_trips() {
        let k = key(7);
        let t = tok(3, 0x1E859B0);
        let text = k.sign(&t);
        let (position, mac) = text.split_once('.').unwrap();
        assert_eq!(position, "3-0/1E859B0");
        assert_eq!(mac.len(), 32);
        assert!(mac.bytes().all(|b| HEX.contains(&b)), "{mac}");
        assert_eq!(k.verify(&text), Ok(t));
        assert_eq!(k.verify(&format!(" {text}\n")), Ok(t));
        assert_eq!(k.verify(&text.to_uppercase()), Ok(t), "hex of either case");
        let max = tok(u64::MAX, u64::MAX);
        assert_eq!(k.verify(&k.sign(&max)), Ok(max));
    }

    #[test]
    fn altered_or_foreign_tokens_are_refused() {
        let k = key(7);
        let text = k.sign(&tok(3, 0x1E859B0));
        let mac = text.split_once('.').unwrap().1;
        let mut flipped = text.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let refused = [
            // The epoch or LSN changed, the MAC kept.
            format!("4-0/1E859B0.{mac}"),
            format!("999999-0/1E859B0.{mac}"),
            format!("3-0/1E859B1.{mac}"),
            format!("3-FFFFFFFF/FFFFFFFF.{mac}"),
            // One bit of the MAC changed.
            String::from_utf8(flipped).unwrap(),
            // Signed by another cluster's key.
            key(8).sign(&tok(3, 0x1E859B0)),
        ];
        for t in refused {
            assert_eq!(k.verify(&t), Err(TokenError::NotIssued), "{t}");
        }
        let malformed = [
            "",
            "x",
            "3-0/1E859B0",                            // unsigned (before signing)
            "999999-0/0",                             // unsigned, made up
            "3-0/1E859B0.",                           // empty MAC
            &format!("3-0/1E859B0.{}", &mac[..30]),   // truncated MAC
            &format!("3-0/1E859B0.{mac}00"),          // long MAC
            &format!("3-0/1E859B0.{}zz", &mac[..30]), // not hex
            &format!("+3-0/1E859B0.{mac}"),           // not digits
            &format!("-3-0/1E859B0.{mac}"),
            &format!("3-0/zz.{mac}"),
            &format!("3-0.{mac}"),
            &format!("3-0/1E859B0.{mac}.{mac}"),
        ];
        for t in malformed {
            assert_eq!(k.verify(t), Err(TokenError::Malformed), "{t}");
        }
    }

    #[test]
    fn short_secrets_are_refused_and_keys_are_not_printed() {
        assert!(TokenKey::new(&[1; 15]).is_none());
        assert!(TokenKey::new(&[]).is_none());
        assert_eq!(format!("{:?}", key(1)), "TokenKey(..)");
    }
}
