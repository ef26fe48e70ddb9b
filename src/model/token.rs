//! Consistency tokens: the epoch and WAL position of a write.
//!
//! Every write answers with a token; a read carrying it must reflect that
//! write. The token's LSN is at or after the end of the write's commit
//! record (read after COMMIT inside the same procedure call), so a replica
//! that has replayed it shows the write. The text form is `<epoch>-<hi>/<lo>`,
//! e.g. `1-0/1E859B0`; clients treat it as opaque.

use std::fmt;
use std::str::FromStr;

/// A PostgreSQL WAL position (`pg_lsn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s.split_once('/').ok_or(TokenError)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| TokenError)?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| TokenError)?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed consistency token")]
pub struct TokenError;

/// What a read must at least reflect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub epoch: u64,
    pub lsn: Lsn,
}

impl FromStr for Token {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (epoch, lsn) = s.trim().split_once('-').ok_or(TokenError)?;
        Ok(Token {
            epoch: epoch.parse().map_err(|_| TokenError)?,
            lsn: lsn.parse()?,
        })
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.lsn)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_compare() {
        let t: Token = "3-0/1E859B0".parse().unwrap();
        assert_eq!(t.epoch, 3);
        assert_eq!(t.lsn, Lsn(0x1E859B0));
        assert_eq!(t.to_string(), "3-0/1E859B0");
        let big: Lsn = "1F/A".parse().unwrap();
        assert_eq!(big.0, (0x1F << 32) | 0xA);
        // (token, db epoch, replayed, satisfied)
        let cases = [
            ("1-0/100", 1, 0x100, true),
            ("1-0/100", 1, 0xFF, false),
            ("1-0/100", 1, 0x200, true),
            ("1-0/100", 2, 0x200, false),
            ("2-0/100", 1, 0x200, false),
        ];
        for (tok, epoch, replayed, want) in cases {
            let t: Token = tok.parse().unwrap();
            assert_eq!(
                t.satisfied_by(epoch, Lsn(replayed)),
                want,
                "{tok} {epoch} {replayed}"
            );
        }
        for bad in ["", "x", "1-", "1-0", "a-0/1", "1-0/zz", "-1-0/1"] {
            assert!(bad.parse::<Token>().is_err(), "{bad}");
        }
    }
}
