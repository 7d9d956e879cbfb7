//! BTP server URIs: `btp+ws://[user:token@]host:port[/path]`, the form the JS `ilp-plugin-btp`
//! takes in its `server` option.

use std::fmt;

/// A parsed `btp+ws://` URI.
///
/// ```
/// use ilp_plugin_lightning::btp::BtpUri;
/// let uri: BtpUri = "btp+ws://alice:s%40cret@127.0.0.1:7768/btp".parse().unwrap();
/// assert_eq!(uri.host, "127.0.0.1");
/// assert_eq!(uri.port, 7768);
/// assert_eq!(uri.path, "/btp");
/// assert_eq!(uri.username.as_deref(), Some("alice"));
/// assert_eq!(uri.token.as_deref(), Some("s@cret"));
/// assert_eq!(uri.websocket_url(), "ws://127.0.0.1:7768/btp");
/// assert!("btp+wss://example.com".parse::<BtpUri>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BtpUri {
    /// Host name or IP address (an IPv6 address without its brackets).
    pub host: String,
    /// TCP port (80 when the URI names none).
    pub port: u16,
    /// Path and query, starting with `/` (`/` when the URI has none).
    pub path: String,
    /// The `user` part, percent-decoded; sent as `auth_username`.
    pub username: Option<String>,
    /// The `token` part, percent-decoded; sent as `auth_token`.
    pub token: Option<String>,
}

/// Why a string is not a usable BTP URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriError {
    /// The scheme is not `btp+ws` (the whole scheme found is given).
    UnsupportedScheme(String),
    /// `btp+wss`: TLS would need tungstenite's native-tls or rustls features, which this crate
    /// does not pull in.
    WssNotSupported,
    /// Nothing between `//` and the path.
    MissingHost,
    /// The port is not a number from 1 to 65535.
    InvalidPort(String),
    /// A `%` escape in the user or token part is not followed by two hex digits, or the
    /// decoded bytes are not UTF-8.
    InvalidPercentEncoding,
    /// An IPv6 host opened with `[` but never closed.
    UnclosedBracket,
    /// A control character or a space, which no URI holds unescaped, at this byte offset.
    InvalidCharacter(usize),
}

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UriError::UnsupportedScheme(s) => {
                write!(f, "unsupported BTP URI scheme {s:?}: expected btp+ws://")
            }
            UriError::WssNotSupported => f.write_str(
                "btp+wss not supported: put a TLS terminator in front and connect with btp+ws",
            ),
            UriError::MissingHost => f.write_str("BTP URI has no host"),
            UriError::InvalidPort(p) => write!(f, "BTP URI port {p:?} is not a number 1-65535"),
            UriError::InvalidPercentEncoding => {
                f.write_str("BTP URI user or token has an invalid %-escape or is not UTF-8")
            }
            UriError::UnclosedBracket => f.write_str("BTP URI IPv6 host is missing its ']'"),
            UriError::InvalidCharacter(offset) => write!(
                f,
                "BTP URI has a control character or space at byte {offset} (escape it as %XX)"
            ),
        }
    }
}

impl std::error::Error for UriError {}

impl BtpUri {
    /// Whether the token would cross a network in clear: `btp+ws` carries it unencrypted, which
    /// is fine to a loopback address (a TLS terminator on the same machine) and nowhere else.
    /// A host name counts as remote unless it is `localhost`: what it resolves to is not known
    /// here.
    pub fn token_in_clear(&self) -> bool {
        let has_token = self.token.as_deref().is_some_and(|t| !t.is_empty());
        let loopback = self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        has_token && !loopback
    }

    /// Parses `btp+ws://[user[:token]@]host[:port][/path]`.
    pub fn parse(uri: &str) -> Result<Self, UriError> {
        // A host such as "127\0..." would otherwise be handed to the resolver, and a path
        // with raw control characters to the HTTP request line.
        if let Some(offset) = uri.bytes().position(|b| b.is_ascii_control() || b == b' ') {
            return Err(UriError::InvalidCharacter(offset));
        }
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| UriError::UnsupportedScheme(String::new()))?;
        match scheme.to_ascii_lowercase().as_str() {
            "btp+ws" => {}
            "btp+wss" => return Err(UriError::WssNotSupported),
            _ => return Err(UriError::UnsupportedScheme(scheme.to_string())),
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let path = if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (username, token) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, token) = match info.split_once(':') {
                    Some((u, t)) => (u, Some(t)),
                    None => (info, None),
                };
                let user = percent_decode(user)?;
                let token = token.map(percent_decode).transpose()?;
                ((!user.is_empty()).then_some(user), token)
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let end = v6.find(']').ok_or(UriError::UnclosedBracket)?;
            let after = &v6[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(UriError::InvalidPort(after.to_string())),
            };
            (&v6[..end], port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(UriError::MissingHost);
        }
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 => n,
                _ => return Err(UriError::InvalidPort(p.to_string())),
            },
        };
        Ok(BtpUri {
            host: host.to_string(),
            port,
            path,
            username,
            token,
        })
    }

    /// The WebSocket URL to open: credentials stripped, as the JS client does.
    pub fn websocket_url(&self) -> String {
        if self.host.contains(':') {
            format!("ws://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            format!("ws://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

impl std::str::FromStr for BtpUri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, UriError> {
        BtpUri::parse(s)
    }
}

/// Shows the URI with the token hidden, so that it can be logged.
impl fmt::Debug for BtpUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BtpUri")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("path", &self.path)
            .field("username", &self.username)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

fn percent_decode(s: &str) -> Result<String, UriError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits exactly: from_str_radix alone would also take "+1".
            let b = match bytes.get(i + 1..i + 3) {
                Some(&[high, low]) if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() => {
                    hex_value(high) << 4 | hex_value(low)
                }
                _ => return Err(UriError::InvalidPercentEncoding),
            };
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UriError::InvalidPercentEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_to_a_remote_host_travels_in_clear() {
        let clear = |uri: &str| BtpUri::parse(uri).unwrap().token_in_clear();
        assert!(clear("btp+ws://alice:secret@example.com:7768"));
        assert!(clear("btp+ws://:secret@10.0.0.1:7768"));
        assert!(clear("btp+ws://alice:secret@[2001:db8::1]:7768"));
        assert!(!clear("btp+ws://alice:secret@127.0.0.1:7768"));
        assert!(!clear("btp+ws://alice:secret@127.8.9.10:7768"));
        assert!(!clear("btp+ws://alice:secret@[::1]:7768"));
        assert!(!clear("btp+ws://alice:secret@LocalHost:7768"));
        assert!(!clear("btp+ws://alice@example.com:7768"));
        assert!(!clear("btp+ws://example.com:7768"));
    }

    #[test]
    fn control_characters_and_spaces_are_refused_with_their_offset() {
        // Found by fuzzing (tests/fuzz/regressions/btp_uri): a host with NULs was accepted.
        assert_eq!(
            BtpUri::parse("btp+ws://:token@127\0\x1a/x"),
            Err(UriError::InvalidCharacter(19))
        );
        assert_eq!(
            BtpUri::parse("btp+ws://host:80/a b"),
            Err(UriError::InvalidCharacter(18))
        );
        assert!(BtpUri::parse("btp+ws://host:80/a%20b").is_ok());
    }

    #[test]
    fn parses_full_uri() {
        let u = BtpUri::parse("btp+ws://bob:tok@localhost:3000/a/b?x=1").unwrap();
        assert_eq!(u.host, "localhost");
        assert_eq!(u.port, 3000);
        assert_eq!(u.path, "/a/b?x=1");
        assert_eq!(u.username.as_deref(), Some("bob"));
        assert_eq!(u.token.as_deref(), Some("tok"));
    }

    #[test]
    fn defaults_and_token_only() {
        let u = BtpUri::parse("btp+ws://:secret@example.com").unwrap();
        assert_eq!(u.port, 80);
        assert_eq!(u.path, "/");
        assert_eq!(u.username, None);
        assert_eq!(u.token.as_deref(), Some("secret"));
        let u = BtpUri::parse("BTP+WS://[::1]:9/").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.websocket_url(), "ws://[::1]:9/");
    }

    #[test]
    fn rejects_bad_uris() {
        assert_eq!(
            BtpUri::parse("btp+wss://h:1"),
            Err(UriError::WssNotSupported)
        );
        assert!(matches!(
            BtpUri::parse("ws://h:1"),
            Err(UriError::UnsupportedScheme(_))
        ));
        assert_eq!(BtpUri::parse("btp+ws://:1"), Err(UriError::MissingHost));
        assert!(matches!(
            BtpUri::parse("btp+ws://h:0"),
            Err(UriError::InvalidPort(_))
        ));
        assert!(matches!(
            BtpUri::parse("btp+ws://h:99999"),
            Err(UriError::InvalidPort(_))
        ));
        for bad in [
            "btp+ws://a:%zz@h",
            "btp+ws://a:%+1@h",
            "btp+ws://a:%1@h",
            "btp+ws://a:%@h",
        ] {
            assert_eq!(
                BtpUri::parse(bad),
                Err(UriError::InvalidPercentEncoding),
                "{bad}"
            );
        }
        assert_eq!(
            BtpUri::parse("btp+ws://[::1"),
            Err(UriError::UnclosedBracket)
        );
        assert!(!format!("{:?}", BtpUri::parse("btp+ws://a:pw@h").unwrap()).contains("pw"));
    }
}
