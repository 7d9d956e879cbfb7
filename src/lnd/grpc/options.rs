//! Connection settings for [`GrpcLightning`](super::GrpcLightning): where the node is, its
//! certificate and macaroon (as bytes, base64, hex or LND's own files), and timeouts.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::encoding;
use crate::lnd::LndError;

/// LND's default gRPC port.
pub const DEFAULT_PORT: u16 = 10009;
/// Default deadline of a unary call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// LND answers messages of up to 200 MiB; gRPC core's client stops at 4 MiB by default, which a
/// ListInvoices of a few thousand invoices exceeds.
pub const DEFAULT_MAX_RECEIVE_MESSAGE_LEN: usize = 64 * 1024 * 1024;
/// How long at most the channel waits between reconnection attempts after the node went away.
/// gRPC's own default (120 s) would leave calls failing for minutes after a restart.
pub const DEFAULT_MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(5);

/// Default HTTP/2 keepalive interval (see [`LndOptions::keepalive`]).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(60);

/// Where a piece of key material comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Material {
    /// The raw bytes (for a certificate: PEM or DER; for a macaroon: the binary file's bytes).
    Bytes(Vec<u8>),
    /// Base64 of the raw bytes, as the JavaScript plugin takes them (a PEM text is also
    /// accepted as is).
    Base64(String),
    /// Hex of the raw bytes (how LND sends macaroons, and how some tools print them).
    Hex(String),
    /// A file: LND's `tls.cert` (PEM) or `admin.macaroon` (binary).
    Path(PathBuf),
}

impl Material {
    /// Describes the source without revealing its content (for `Debug` of secrets).
    fn describe_redacted(&self) -> String {
        match self {
            Material::Bytes(b) => format!("Bytes(<{} bytes redacted>)", b.len()),
            Material::Base64(s) => format!("Base64(<{} chars redacted>)", s.len()),
            Material::Hex(s) => format!("Hex(<{} chars redacted>)", s.len()),
            Material::Path(p) => format!("Path({:?})", p),
        }
    }

    /// The raw bytes; `what` names the item in error messages.
    fn load(&self, what: &str) -> Result<Vec<u8>, LndError> {
        match self {
            Material::Bytes(b) => Ok(b.clone()),
            Material::Base64(s) => base64_decode(s)
                .map_err(|e| LndError::Config(format!("{what} is not valid base64: {e}"))),
            Material::Hex(s) => hex::decode(s.trim())
                .map_err(|e| LndError::Config(format!("{what} is not valid hex: {e}"))),
            Material::Path(p) => std::fs::read(p).map_err(|e| {
                LndError::Config(format!("cannot read {what} file {}: {e}", p.display()))
            }),
        }
    }
}

/// How to reach and authenticate to one LND node.
///
/// `Debug` shows where the macaroon comes from but never its content.
#[derive(Clone)]
pub struct LndOptions {
    /// Host name or IP of the node. `127.0.0.1` and `localhost` are both dialled as
    /// `localhost`, the name LND's certificate always carries.
    pub host: String,
    /// gRPC port (LND's default: 10009).
    pub port: u16,
    /// The node's TLS certificate, used as the only trusted root.
    pub tls_cert: Material,
    /// The macaroon, sent hex-encoded with every call.
    pub macaroon: Material,
    /// Deadline of every unary call (and of `connect()`'s GetInfo).
    pub call_timeout: Duration,
    /// Largest message accepted from the node.
    pub max_receive_message_len: usize,
    /// Longest pause between reconnection attempts.
    pub max_reconnect_backoff: Duration,
    /// HTTP/2 keepalive ping interval while calls are open, to notice a silently dead
    /// connection under a quiet invoice stream (default 60 s). LND accepts client pings every
    /// 5 s or more (`grpc.client-ping-min-wait`); a plain gRPC-core server only every 5 minutes
    /// and answers faster ones with GOAWAY "too_many_pings": use `None` for such a server.
    pub keepalive: Option<Duration>,
    /// Threads polling gRPC's completion queues.
    pub completion_queue_threads: usize,
}

impl fmt::Debug for LndOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cert = match &self.tls_cert {
            Material::Path(p) => format!("Path({p:?})"),
            other => other.describe_redacted(),
        };
        f.debug_struct("LndOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls_cert", &format_args!("{cert}"))
            .field(
                "macaroon",
                &format_args!("{}", self.macaroon.describe_redacted()),
            )
            .field("call_timeout", &self.call_timeout)
            .field("max_receive_message_len", &self.max_receive_message_len)
            .field("max_reconnect_backoff", &self.max_reconnect_backoff)
            .field("keepalive", &self.keepalive)
            .field("completion_queue_threads", &self.completion_queue_threads)
            .finish()
    }
}

impl LndOptions {
    /// Options for `host:port` with the given certificate and macaroon and default timeouts.
    pub fn new(host: impl Into<String>, port: u16, tls_cert: Material, macaroon: Material) -> Self {
        LndOptions {
            host: host.into(),
            port,
            tls_cert,
            macaroon,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            max_receive_message_len: DEFAULT_MAX_RECEIVE_MESSAGE_LEN,
            max_reconnect_backoff: DEFAULT_MAX_RECONNECT_BACKOFF,
            keepalive: Some(DEFAULT_KEEPALIVE),
            completion_queue_threads: 2,
        }
    }

    /// The `host:port` gRPC dials, and the name the certificate is checked against.
    pub fn target(&self) -> Result<String, LndError> {
        let host = self.host.trim();
        if host.is_empty()
            || host
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err(LndError::Config(format!(
                "host {:?} is not a host name or IP address",
                self.host
            )));
        }
        if self.port == 0 {
            return Err(LndError::Config("port 0 cannot be dialled".into()));
        }
        let host = match host {
            // LND's self-signed certificate always names `localhost`; dialling that name makes
            // the host name check pass however the user spelled the loopback address.
            "127.0.0.1" | "localhost" | "[::1]" | "::1" => "localhost".to_string(),
            h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
            h => h.to_string(),
        };
        Ok(format!("{host}:{}", self.port))
    }

    /// The certificate as PEM (DER input is wrapped).
    pub fn load_tls_cert_pem(&self) -> Result<Vec<u8>, LndError> {
        let raw = self.tls_cert.load("TLS certificate")?;
        cert_to_pem(&raw)
    }

    /// The macaroon as the hex string LND expects in metadata.
    pub(crate) fn load_macaroon_hex(&self) -> Result<MacaroonHex, LndError> {
        let raw = self.macaroon.load("macaroon")?;
        if raw.is_empty() {
            return Err(LndError::Config("the macaroon is empty".into()));
        }
        // A hex text given as "bytes" or in a file would otherwise be hex-encoded twice.
        let looks_hex = raw.len() % 2 == 0 && raw.iter().all(|b| b.is_ascii_hexdigit());
        if looks_hex {
            let text = String::from_utf8(raw).expect("hex digits are ASCII");
            return Ok(MacaroonHex(text));
        }
        Ok(MacaroonHex(hex::encode(raw)))
    }

    /// Checks the settings without touching the network.
    pub fn validate(&self) -> Result<(), LndError> {
        self.target()?;
        self.load_tls_cert_pem()?;
        self.load_macaroon_hex()?;
        if self.call_timeout.is_zero() {
            return Err(LndError::Config("call timeout must be above zero".into()));
        }
        if matches!(self.keepalive, Some(k) if k < Duration::from_secs(5)) {
            return Err(LndError::Config(
                "keepalive below 5 s: LND closes connections that ping more often".into(),
            ));
        }
        if self.completion_queue_threads == 0 {
            return Err(LndError::Config(
                "at least one completion queue thread is needed".into(),
            ));
        }
        if self.max_receive_message_len > i32::MAX as usize {
            return Err(LndError::Config(format!(
                "max_receive_message_len {} exceeds gRPC's limit of {}",
                self.max_receive_message_len,
                i32::MAX
            )));
        }
        Ok(())
    }
}

/// The hex macaroon; its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct MacaroonHex(String);

impl MacaroonHex {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MacaroonHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacaroonHex(<{} chars redacted>)", self.0.len())
    }
}

/// PEM text stays as it is; DER is wrapped in a PEM `CERTIFICATE` block.
fn cert_to_pem(raw: &[u8]) -> Result<Vec<u8>, LndError> {
    let trimmed = trim_ascii_start(raw);
    if trimmed.starts_with(b"-----BEGIN") {
        if !contains(trimmed, b"-----BEGIN CERTIFICATE-----") {
            return Err(LndError::Config(
                "the TLS certificate PEM holds no CERTIFICATE block (is it the key file?)".into(),
            ));
        }
        return Ok(trimmed.to_vec());
    }
    // DER certificates start with a SEQUENCE tag.
    if raw.first() != Some(&0x30) {
        return Err(LndError::Config(
            "the TLS certificate is neither PEM nor DER; give LND's tls.cert".into(),
        ));
    }
    let b64 = encoding::base64(raw);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    Ok(pem.into_bytes())
}

fn trim_ascii_start(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Base64 as LND's users hand it over (see [`crate::encoding::decode_base64`]), except that a
/// text that already is PEM is returned unchanged and an empty text is refused.
fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    if text.trim_start().starts_with("-----BEGIN") {
        return Ok(text.trim_start().as_bytes().to_vec());
    }
    let out = encoding::decode_base64(text).map_err(|e| e.to_string())?;
    if out.is_empty() {
        return Err("empty".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(cert: Material, mac: Material) -> LndOptions {
        LndOptions::new("127.0.0.1", DEFAULT_PORT, cert, mac)
    }

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn base64_round_trips_all_lengths() {
        for len in 0..40usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let enc = encoding::base64(&data);
            if len == 0 {
                assert!(base64_decode(&enc).is_err());
            } else {
                assert_eq!(base64_decode(&enc).unwrap(), data, "len {len}");
                // Unpadded and line-wrapped forms decode too.
                let unpadded = enc.trim_end_matches('=');
                assert_eq!(base64_decode(unpadded).unwrap(), data);
                let wrapped: String = enc
                    .chars()
                    .enumerate()
                    .flat_map(|(i, c)| if i % 5 == 4 { vec![c, '\n'] } else { vec![c] })
                    .collect();
                assert_eq!(base64_decode(&wrapped).unwrap(), data);
            }
        }
        assert_eq!(encoding::base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(encoding::base64(b"fo"), "Zm8=");
        assert_eq!(base64_decode("Zm9vYg==").unwrap(), b"foob");
    }

    #[test]
    fn base64_rejects_garbage() {
        assert!(base64_decode("Zm9v!mFy").unwrap_err().contains("'!'"));
        assert!(base64_decode("Zm8=Zm8=").is_err());
        assert!(base64_decode("Z").is_err());
        assert!(base64_decode("Zm9=").is_err(), "non-zero trailing bits");
    }

    #[test]
    fn macaroon_from_bytes_base64_hex_and_file() {
        let raw = vec![0x02, 0x01, 0x03, 0xff, 0x00];
        let expect = "020103ff00";
        let cert = Material::Base64(PEM.into());
        for mac in [
            Material::Bytes(raw.clone()),
            Material::Base64(encoding::base64(&raw)),
            Material::Hex(expect.to_uppercase()),
        ] {
            let hex = opts(cert.clone(), mac).load_macaroon_hex().unwrap();
            assert_eq!(hex.expose().to_lowercase(), expect);
        }
        let dir = std::env::temp_dir().join(format!("lnd-opts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("admin.macaroon");
        std::fs::write(&path, &raw).unwrap();
        let hex = opts(cert.clone(), Material::Path(path.clone()))
            .load_macaroon_hex()
            .unwrap();
        assert_eq!(hex.expose(), expect);
        let missing = opts(cert, Material::Path(dir.join("nope.macaroon")))
            .load_macaroon_hex()
            .unwrap_err();
        assert!(matches!(missing, LndError::Config(ref m) if m.contains("nope.macaroon")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cert_pem_der_base64_and_bad_input() {
        let o = opts(
            Material::Bytes(PEM.as_bytes().to_vec()),
            Material::Hex("00".into()),
        );
        assert_eq!(o.load_tls_cert_pem().unwrap(), PEM.as_bytes());
        let o = opts(
            Material::Base64(encoding::base64(PEM.as_bytes())),
            Material::Hex("00".into()),
        );
        assert_eq!(o.load_tls_cert_pem().unwrap(), PEM.as_bytes());
        let der = vec![0x30, 0x82, 0x01, 0x00, 0xaa];
        let o = opts(Material::Bytes(der.clone()), Material::Hex("00".into()));
        let pem = String::from_utf8(o.load_tls_cert_pem().unwrap()).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.contains(&encoding::base64(&der)));
        let o = opts(
            Material::Bytes(b"hello".to_vec()),
            Material::Hex("00".into()),
        );
        assert!(matches!(o.load_tls_cert_pem(), Err(LndError::Config(_))));
        let key = "-----BEGIN EC PRIVATE KEY-----\nMHc=\n-----END EC PRIVATE KEY-----\n";
        let o = opts(Material::Bytes(key.into()), Material::Hex("00".into()));
        assert!(
            matches!(o.load_tls_cert_pem(), Err(LndError::Config(m)) if m.contains("key file"))
        );
    }

    #[test]
    fn targets() {
        let mut o = opts(Material::Base64(PEM.into()), Material::Hex("00".into()));
        assert_eq!(o.target().unwrap(), "localhost:10009");
        o.host = "localhost".into();
        o.port = 1234;
        assert_eq!(o.target().unwrap(), "localhost:1234");
        o.host = "node.example".into();
        assert_eq!(o.target().unwrap(), "node.example:1234");
        o.host = "fe80::1".into();
        assert_eq!(o.target().unwrap(), "[fe80::1]:1234");
        o.host = "bad host".into();
        assert!(matches!(o.target(), Err(LndError::Config(_))));
        o.host = "a\0b".into();
        assert!(matches!(o.target(), Err(LndError::Config(_))));
        o.host = "h".into();
        o.port = 0;
        assert!(o.target().is_err());
    }

    #[test]
    fn debug_never_shows_the_macaroon() {
        let secret = "0201036c6e6402f801030a10";
        for mac in [
            Material::Hex(secret.into()),
            Material::Base64(encoding::base64(&hex::decode(secret).unwrap())),
            Material::Bytes(hex::decode(secret).unwrap()),
        ] {
            let o = opts(Material::Base64(PEM.into()), mac.clone());
            let shown = format!("{o:?} {:?}", o.load_macaroon_hex().unwrap());
            assert!(!shown.contains(secret), "{shown}");
            assert!(!shown.contains("AgEDbG5kAvgBAwoQ"), "{shown}");
            assert!(shown.contains("redacted"), "{shown}");
        }
    }

    #[test]
    fn validate_checks_everything() {
        let good = opts(Material::Base64(PEM.into()), Material::Hex("0a0b".into()));
        good.validate().unwrap();
        let mut bad = good.clone();
        bad.call_timeout = Duration::ZERO;
        assert!(bad.validate().is_err());
        let mut bad = good.clone();
        bad.macaroon = Material::Bytes(vec![]);
        assert!(bad.validate().is_err());
        let mut bad = good.clone();
        bad.keepalive = Some(Duration::from_secs(1));
        assert!(bad.validate().is_err());
        let mut off = good.clone();
        off.keepalive = None;
        off.validate().unwrap();
        let mut bad = good;
        bad.completion_queue_threads = 0;
        assert!(bad.validate().is_err());
    }
}
