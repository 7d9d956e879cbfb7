//! Server-side BTP authentication in the style of `ilp-plugin-mini-accounts`: which account a
//! client is, and which token owns that account.
//!
//! The account is the `auth_username` the client sent, or else `base64url(sha256(token))`.
//! The first token seen for an account is bound to it; only its SHA-256 is kept, and it is
//! compared in constant time.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bitcoin::hashes::{sha256, Hash};
use parking_lot::Mutex;

use crate::ilp::address::validate_segment;

/// The SHA-256 of an auth token: all a [`TokenStore`] ever holds.
pub type TokenHash = [u8; 32];

/// SHA-256 of `token`.
pub fn hash_token(token: &[u8]) -> TokenHash {
    sha256::Hash::hash(token).to_byte_array()
}

pub use crate::encoding::base64url;

/// The account a token names when the client sends no `auth_username`:
/// `base64url(sha256(token))`, 43 characters, as mini-accounts' `tokenToAccount`.
pub fn account_for_token(token: &[u8]) -> String {
    base64url(&hash_token(token))
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // A data dependency the optimiser cannot see through keeps the fold from short-circuiting.
    std::hint::black_box(diff) == 0
}

/// Why an `auth_username` cannot be an account name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAccountName(pub String);

impl fmt::Display for InvalidAccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "auth_username {:?} is not one ILP address segment (only A-Z a-z 0-9 _ ~ -)",
            self.0
        )
    }
}

impl std::error::Error for InvalidAccountName {}

/// The account name for an auth message: `auth_username` when present and non-empty (it must
/// be one ILP address segment — stricter than mini-accounts, which takes anything), else the
/// token's hash.
pub fn account_name(username: Option<&str>, token: &[u8]) -> Result<String, InvalidAccountName> {
    match username {
        Some(u) if !u.is_empty() => {
            validate_segment(u).map_err(|_| InvalidAccountName(u.to_string()))?;
            Ok(u.to_string())
        }
        _ => Ok(account_for_token(token)),
    }
}

/// What a [`TokenStore`] found when a token was presented for an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// The account had no token: this one is now bound to it.
    Bound,
    /// The token is the one bound to the account.
    Matches,
    /// Another token is bound to the account.
    Mismatch,
}

/// A store's failure to read or persist a binding.
#[derive(Debug)]
pub struct TokenStoreError(pub io::Error);

impl fmt::Display for TokenStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token store: {}", self.0)
    }
}

impl std::error::Error for TokenStoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Where account → token bindings live. Implementations must make `check_or_bind` atomic per
/// account: two first connections racing with different tokens must not both be `Bound`.
pub trait TokenStore: Send + Sync {
    /// Binds `token_hash` to `account` if it has none, else compares it (in constant time)
    /// with the bound one.
    fn check_or_bind(
        &self,
        account: &str,
        token_hash: &TokenHash,
    ) -> Result<TokenCheck, TokenStoreError>;
}

fn check_in_map(
    map: &mut HashMap<String, TokenHash>,
    account: &str,
    token_hash: &TokenHash,
) -> TokenCheck {
    match map.get(account) {
        Some(bound) if constant_time_eq(bound, token_hash) => TokenCheck::Matches,
        Some(_) => TokenCheck::Mismatch,
        None => {
            map.insert(account.to_string(), *token_hash);
            TokenCheck::Bound
        }
    }
}

/// Bindings in memory: they survive reconnects, not restarts.
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    bindings: Mutex<HashMap<String, TokenHash>>,
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl TokenStore for MemoryTokenStore {
    fn check_or_bind(
        &self,
        account: &str,
        token_hash: &TokenHash,
    ) -> Result<TokenCheck, TokenStoreError> {
        Ok(check_in_map(&mut self.bindings.lock(), account, token_hash))
    }
}

/// Bindings in a directory, one file `<account>.token-sha256` (hex) per account, each written
/// atomically (temp file, fsync, rename). Account names are address segments or base64url, so
/// they are safe as file names. All bindings are loaded when the store opens.
#[derive(Debug)]
pub struct FileTokenStore {
    dir: PathBuf,
    bindings: Mutex<HashMap<String, TokenHash>>,
}

const TOKEN_FILE_SUFFIX: &str = ".token-sha256";

impl FileTokenStore {
    /// Opens (creating it if needed) the store in `dir` and loads its bindings.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, TokenStoreError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(TokenStoreError)?;
        let mut bindings = HashMap::new();
        for entry in fs::read_dir(&dir).map_err(TokenStoreError)? {
            let entry = entry.map_err(TokenStoreError)?;
            let name = entry.file_name();
            let Some(account) = name
                .to_str()
                .and_then(|n| n.strip_suffix(TOKEN_FILE_SUFFIX))
            else {
                continue;
            };
            let text = fs::read_to_string(entry.path()).map_err(TokenStoreError)?;
            let mut hash = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut hash).map_err(|e| {
                TokenStoreError(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", entry.path().display()),
                ))
            })?;
            bindings.insert(account.to_string(), hash);
        }
        Ok(FileTokenStore {
            dir,
            bindings: Mutex::new(bindings),
        })
    }

    fn persist(&self, account: &str, token_hash: &TokenHash) -> io::Result<()> {
        let path = self.dir.join(format!("{account}{TOKEN_FILE_SUFFIX}"));
        let tmp = self.dir.join(format!(".{account}{TOKEN_FILE_SUFFIX}.tmp"));
        let mut file = fs::File::create(&tmp)?;
        file.write_all(hex::encode(token_hash).as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &path)?;
        // Make the rename itself durable.
        if let Ok(dir) = fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl TokenStore for FileTokenStore {
    fn check_or_bind(
        &self,
        account: &str,
        token_hash: &TokenHash,
    ) -> Result<TokenCheck, TokenStoreError> {
        // Claim the account in memory first so the lock is not held across file I/O; undo the
        // claim if it cannot be persisted.
        let check = check_in_map(&mut self.bindings.lock(), account, token_hash);
        if check == TokenCheck::Bound {
            if let Err(e) = self.persist(account, token_hash) {
                self.bindings.lock().remove(account);
                return Err(TokenStoreError(e));
            }
        }
        Ok(check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        for (input, want) in [
            (&b""[..], ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"fooba", "Zm9vYmE"),
            (b"foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(input), want);
        }
        assert_eq!(base64url(&[0xff, 0xef, 0xbe]), "_---");
    }

    #[test]
    fn account_for_token_is_base64url_of_sha256() {
        // sha256("secret") = 2bb80d53...; base64url of it without padding.
        let account = account_for_token(b"secret");
        assert_eq!(account.len(), 43);
        assert_eq!(account, "K7gNU3sdo-OL0wNhqoVWhr3g6s1xYv72ol_pe_Unols");
    }

    #[test]
    fn account_name_validates_username() {
        assert_eq!(account_name(Some("alice"), b"t").unwrap(), "alice");
        assert_eq!(
            account_name(None, b"secret").unwrap(),
            account_for_token(b"secret")
        );
        assert_eq!(
            account_name(Some(""), b"secret").unwrap(),
            account_for_token(b"secret")
        );
        assert!(account_name(Some("a.b"), b"t").is_err());
        assert!(account_name(Some("a b"), b"t").is_err());
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn memory_store_binds_first_token() {
        let store = MemoryTokenStore::new();
        let a = hash_token(b"a");
        let b = hash_token(b"b");
        assert_eq!(store.check_or_bind("x", &a).unwrap(), TokenCheck::Bound);
        assert_eq!(store.check_or_bind("x", &a).unwrap(), TokenCheck::Matches);
        assert_eq!(store.check_or_bind("x", &b).unwrap(), TokenCheck::Mismatch);
        assert_eq!(store.check_or_bind("y", &b).unwrap(), TokenCheck::Bound);
    }

    #[test]
    fn file_store_survives_reopen() {
        let dir = std::env::temp_dir().join(format!(
            "btp-token-store-{}-{}",
            std::process::id(),
            line!()
        ));
        let _ = fs::remove_dir_all(&dir);
        let a = hash_token(b"a");
        let b = hash_token(b"b");
        {
            let store = FileTokenStore::open(&dir).unwrap();
            assert_eq!(store.check_or_bind("alice", &a).unwrap(), TokenCheck::Bound);
        }
        let store = FileTokenStore::open(&dir).unwrap();
        assert_eq!(
            store.check_or_bind("alice", &a).unwrap(),
            TokenCheck::Matches
        );
        assert_eq!(
            store.check_or_bind("alice", &b).unwrap(),
            TokenCheck::Mismatch
        );
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
