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

    /// Every account with a token bound, read when a server starts so that its account cap
    /// counts them. `None` (the default): this store cannot list them, and the server counts
    /// only the accounts it has seen authenticate since it started.
    fn bound_accounts(&self) -> Result<Option<Vec<String>>, TokenStoreError> {
        Ok(None)
    }

    /// Forgets `account`'s binding (an account that expired unused): its name is free again.
    /// The default refuses, and such a store's accounts never expire.
    fn unbind(&self, account: &str) -> Result<(), TokenStoreError> {
        Err(TokenStoreError(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("this token store cannot forget account {account}"),
        )))
    }
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

    fn bound_accounts(&self) -> Result<Option<Vec<String>>, TokenStoreError> {
        Ok(Some(self.bindings.lock().keys().cloned().collect()))
    }

    fn unbind(&self, account: &str) -> Result<(), TokenStoreError> {
        self.bindings.lock().remove(account);
        Ok(())
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

    fn bound_accounts(&self) -> Result<Option<Vec<String>>, TokenStoreError> {
        Ok(Some(self.bindings.lock().keys().cloned().collect()))
    }

    fn unbind(&self, account: &str) -> Result<(), TokenStoreError> {
        let path = self.dir.join(format!("{account}{TOKEN_FILE_SUFFIX}"));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(TokenStoreError(e)),
        }
        if let Ok(dir) = fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        self.bindings.lock().remove(account);
        Ok(())
    }
}

/// The accounts allowed to authenticate, from an `--accounts` file: when a server has one, only
/// these tokens get in and nothing is ever bound.
///
/// The file is text, one account a line; blank lines and lines starting with `#` are skipped:
///
/// ```text
/// # account   sha256(token), hex
/// alice       2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b
/// # no name: the account is base64url(sha256(token)), for clients that send no auth_username
/// 4b227777d4dd1fc61c6f884f48641d02b4d121d3fd328cb08b5531fcacdabf8a
/// ```
///
/// A hash is `printf %s "$TOKEN" | sha256sum`: the file holds no token itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    accounts: HashMap<String, TokenHash>,
}

/// A line of an allow-list that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowListError {
    /// Its number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for AllowListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "accounts file, line {}: {}", self.line, self.problem)
    }
}

impl std::error::Error for AllowListError {}

impl AllowList {
    /// Reads the format above.
    pub fn parse(text: &str) -> Result<AllowList, AllowListError> {
        let mut accounts = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |problem: String| AllowListError {
                line: index + 1,
                problem,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (name, hex_hash) = match fields.as_slice() {
                [hash] => (None, *hash),
                [name, hash] => (Some(*name), *hash),
                _ => {
                    return Err(error(
                        "expected `ACCOUNT SHA256HEX` or `SHA256HEX`".to_string(),
                    ))
                }
            };
            let mut hash = [0u8; 32];
            hex::decode_to_slice(hex_hash, &mut hash).map_err(|e| {
                error(format!(
                    "{hex_hash:?} is not a SHA-256 in hex (64 digits): {e}"
                ))
            })?;
            let account = match name {
                Some(name) => {
                    validate_segment(name)
                        .map_err(|_| error(InvalidAccountName(name.to_string()).to_string()))?;
                    name.to_string()
                }
                None => base64url(&hash),
            };
            if accounts.insert(account.clone(), hash).is_some() {
                return Err(error(format!("account {account} is listed twice")));
            }
        }
        Ok(AllowList { accounts })
    }

    /// Reads the file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<AllowList, String> {
        let path = path.as_ref();
        let text = fs::read_to_string(path)
            .map_err(|e| format!("cannot read accounts file {}: {e}", path.display()))?;
        AllowList::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Whether `token_hash` is the one listed for `account` (compared in constant time).
    pub fn allows(&self, account: &str, token_hash: &TokenHash) -> bool {
        self.accounts
            .get(account)
            .is_some_and(|listed| constant_time_eq(listed, token_hash))
    }

    /// How many accounts it lists.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Whether it lists none.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
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
    fn allow_list_reads_named_and_token_derived_accounts() {
        let alice = hex::encode(hash_token(b"alice-token"));
        let anonymous = hash_token(b"anonymous-token-long-enough");
        let text = format!(
            "# comment\n\nalice {alice}\n  {}  \n",
            hex::encode(anonymous)
        );
        let list = AllowList::parse(&text).unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.allows("alice", &hash_token(b"alice-token")));
        assert!(!list.allows("alice", &hash_token(b"other")));
        assert!(!list.allows("bob", &hash_token(b"alice-token")));
        assert!(list.allows(
            &account_for_token(b"anonymous-token-long-enough"),
            &anonymous
        ));
        let bad = AllowList::parse("alice 12zz\n").unwrap_err();
        assert_eq!(bad.line, 1);
        assert!(bad.problem.contains("SHA-256"), "{bad}");
        let twice = AllowList::parse(&format!("a {alice}\na {alice}\n")).unwrap_err();
        assert_eq!(twice.line, 2);
        assert!(AllowList::parse(&format!("a.b {alice}")).is_err());
        assert!(AllowList::parse(&format!("a {alice} extra")).is_err());
    }

    #[test]
    fn stores_list_and_forget_bindings() {
        let store = MemoryTokenStore::new();
        store.check_or_bind("x", &hash_token(b"a")).unwrap();
        assert_eq!(store.bound_accounts().unwrap(), Some(vec!["x".to_string()]));
        store.unbind("x").unwrap();
        assert_eq!(store.bound_accounts().unwrap(), Some(vec![]));
        assert_eq!(
            store.check_or_bind("x", &hash_token(b"b")).unwrap(),
            TokenCheck::Bound
        );
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
        store.unbind("alice").unwrap();
        drop(store);
        let store = FileTokenStore::open(&dir).unwrap();
        assert_eq!(store.bound_accounts().unwrap(), Some(vec![]));
        assert_eq!(store.check_or_bind("alice", &b).unwrap(), TokenCheck::Bound);
        fs::remove_dir_all(&dir).unwrap();
    }
}
