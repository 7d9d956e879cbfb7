//! The bodies of the fuzz targets: every parser a BTP peer or an LND node can feed, each given
//! arbitrary bytes. One definition serves twice: the libFuzzer binaries in `fuzz_targets/`
//! call these functions, and the main crate's `tests/fuzz_corpus.rs` includes this file to
//! replay the committed corpus and crash files through them under `cargo test`.
//!
//! A target fails by panicking. Beyond "never panics", each one checks what must hold for
//! whatever it accepts: a parsed packet serializes back to its input (the codecs are canonical
//! OER), a re-parse gives the same value, typed parsers agree with the generic one, and a
//! converted LND answer keeps the promises the conversion checks (hashes, preimages).

use ilp_plugin_lightning::btp::{self, auth, AuthRequest, ContentType, ProtocolData};
use ilp_plugin_lightning::ilp::{self, ildcp::IldcpResponse, oer, ErrorCode};
use ilp_plugin_lightning::lnd::grpc::convert;
use ilp_plugin_lightning::lnd::proto::lightning;
use ilp_plugin_lightning::lnd::{InvoiceCursor, PaymentHash, PaymentStatus};
use protobuf::Message as _;

/// Defines libFuzzer's entry point, `LLVMFuzzerTestOneInput`, for one target of this file. A
/// panic cannot unwind out of it: the process aborts, and libFuzzer reports the crash and saves
/// the input.
#[macro_export]
macro_rules! fuzz_target {
    ($target:ident) => {
        /// Called by libFuzzer with each input.
        #[no_mangle]
        pub extern "C" fn LLVMFuzzerTestOneInput(data: *const u8, size: usize) -> i32 {
            let input: &[u8] = if size == 0 || data.is_null() {
                &[]
            } else {
                // SAFETY: libFuzzer passes `size` readable bytes at `data`, alive for the call.
                unsafe { ::std::slice::from_raw_parts(data, size) }
            };
            $crate::$target(input);
            0
        }
    };
}

/// What a target made of its input: the replay test checks that a target's corpus reaches both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The parser accepted the input and the checks on the result passed.
    Accepted,
    /// The parser refused the input with an error (which was formatted, as a log line would).
    Rejected,
}

/// A target body.
pub type Target = fn(&[u8]) -> Outcome;

/// Every target, by the name of its fuzz binary and corpus folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("ilp_packet", ilp_packet),
    ("ildcp", ildcp),
    ("btp_packet", btp_packet),
    ("btp_protocol_data", btp_protocol_data),
    ("btp_auth", btp_auth),
    ("btp_uri", btp_uri),
    ("lnd_get_info", lnd_get_info),
    ("lnd_invoice", lnd_invoice),
    ("lnd_payment", lnd_payment),
];

/// Formats an error as a log line would, and checks that its offset lies within the input.
fn refused(error: impl std::fmt::Display, offset: usize, input_len: usize) -> Outcome {
    assert!(!error.to_string().is_empty());
    assert!(
        offset <= input_len,
        "error offset {offset} past the end of a {input_len}-byte input: {error}"
    );
    Outcome::Rejected
}

/// An ILP packet (Prepare, Fulfill or Reject) as a peer sends it inside BTP.
pub fn ilp_packet(data: &[u8]) -> Outcome {
    let packet = match ilp::Packet::parse(data) {
        Ok(packet) => packet,
        Err(e) => {
            assert!(ilp::Prepare::parse(data).is_err());
            assert!(ilp::Fulfill::parse(data).is_err());
            assert!(ilp::Reject::parse(data).is_err());
            return refused(e, e.offset, data.len());
        }
    };
    assert_eq!(
        packet.to_bytes(),
        data,
        "a parsed ILP packet re-serializes unchanged"
    );
    match packet {
        ilp::Packet::Prepare(prepare) => {
            assert_eq!(ilp::Prepare::parse(data), Ok(prepare));
            assert_eq!(prepare.encoded_len(), data.len());
            assert_eq!(
                ilp::Timestamp::parse_ilp(&prepare.expires_at().to_ilp()),
                Ok(prepare.expires_at())
            );
            assert!(!prepare.expires_at().to_iso8601().is_empty());
            // The server answers these itself (IL-DCP).
            let _ = ilp::ildcp::is_request(&prepare);
        }
        ilp::Packet::Fulfill(fulfill) => {
            assert_eq!(ilp::Fulfill::parse(data), Ok(fulfill));
            assert_eq!(fulfill.encoded_len(), data.len());
            let _ = fulfill.fulfills(&[0; 32]);
            // A client reads its address from the Fulfill answering its IL-DCP request.
            ildcp(fulfill.data());
        }
        ilp::Packet::Reject(reject) => {
            assert_eq!(ilp::Reject::parse(data), Ok(reject));
            assert_eq!(reject.encoded_len(), data.len());
            let code = reject.code();
            let _ = (code.class(), code.name(), code.to_string());
            if code == ErrorCode::F08_AMOUNT_TOO_LARGE {
                if let Ok(details) = ilp::MaxPacketAmountDetails::parse(reject.data()) {
                    assert_eq!(details.to_bytes()[..], reject.data()[..16]);
                }
            }
        }
    }
    Outcome::Accepted
}

/// IL-DCP: the data of the Fulfill a parent answers with, and the whole reply packet.
pub fn ildcp(data: &[u8]) -> Outcome {
    let as_data = IldcpResponse::parse(data);
    let as_reply = IldcpResponse::from_reply(data);
    for response in as_data.iter().chain(as_reply.iter()) {
        assert!(ilp::Address::new(response.client_address.as_str()).is_ok());
        let encoded = response.to_data();
        // A parsed response can carry an asset code too long for a Fulfill's data; the
        // server only ever encodes its own configuration.
        if encoded.len() <= ilp::packet::MAX_DATA_LEN {
            let reply = response.to_fulfill_bytes();
            assert_eq!(IldcpResponse::from_reply(&reply).as_ref(), Ok(response));
        }
    }
    if let Ok(response) = &as_data {
        assert_eq!(
            response.to_data(),
            data,
            "IL-DCP data re-serializes unchanged"
        );
    }
    match (&as_data, &as_reply) {
        (Err(a), Err(b)) => {
            assert!(!a.to_string().is_empty() && !b.to_string().is_empty());
            Outcome::Rejected
        }
        _ => Outcome::Accepted,
    }
}

/// Any BTP packet, as the first parse of every WebSocket frame does it.
pub fn btp_packet(data: &[u8]) -> Outcome {
    let packet = match btp::Packet::parse(data) {
        Ok(packet) => packet,
        Err(e) => {
            assert!(btp::Message::parse(data).is_err());
            assert!(btp::Response::parse(data).is_err());
            assert!(btp::Transfer::parse(data).is_err());
            assert!(btp::ErrorPacket::parse(data).is_err());
            return refused(e, e.offset, data.len());
        }
    };
    let bytes = packet.to_bytes();
    assert_eq!(bytes.len(), packet.encoded_len());
    assert_eq!(
        btp::Packet::parse(&bytes),
        Ok(packet),
        "a re-parse gives the same packet"
    );
    match packet {
        btp::Packet::Message(message) => {
            assert_eq!(btp::Message::parse(data), Ok(message));
            // The first frame of a connection must be an auth Message.
            if let Ok(auth) = AuthRequest::from_message(&message) {
                let _ = auth::account_name(auth.username, auth.token.as_bytes());
            }
        }
        btp::Packet::Response(response) => {
            assert_eq!(btp::Response::parse(data), Ok(response));
        }
        btp::Packet::Transfer(transfer) => {
            assert_eq!(btp::Transfer::parse(data), Ok(transfer));
        }
        btp::Packet::Error(error) => {
            assert_eq!(btp::ErrorPacket::parse(data), Ok(error));
            let _ = (error.code().to_string(), error.triggered_at().to_iso8601());
        }
    }
    // Only an Error's triggeredAt has several accepted forms (written back in the 19-character
    // one); everything else is canonical.
    if packet.packet_type() != btp::PacketType::Error {
        assert_eq!(bytes, data, "a parsed BTP packet re-serializes unchanged");
    }
    check_protocol_data(packet.protocol_data());
    // The plugin reads the ILP packet of a Message or Response next.
    if let Some(ilp) = packet.protocol_data().ilp() {
        ilp_packet(ilp);
    }
    Outcome::Accepted
}

/// What holds for any parsed protocol data, whatever packet it came in.
fn check_protocol_data(protocol_data: ProtocolData<'_>) -> Vec<btp::ProtocolDataEntry<'_>> {
    let entries: Vec<_> = protocol_data.iter().collect();
    assert_eq!(entries.len(), protocol_data.len());
    assert_eq!(protocol_data.primary(), entries.first().copied());
    for entry in &entries {
        // Names are unique, so each is found as itself.
        assert_eq!(protocol_data.get(entry.name), Some(*entry));
        assert!(entry.name.is_ascii());
        if entry.content_type.is_text() {
            assert!(entry.data_as_str().is_some(), "text entries are UTF-8");
        }
        assert_eq!(
            ContentType::from_byte(entry.content_type.to_byte()),
            entry.content_type
        );
        let _ = entry.content_type.mime_type();
    }
    entries
}

/// Protocol data on its own: the input is the contents of a Message (count and entries).
pub fn btp_protocol_data(data: &[u8]) -> Outcome {
    let mut frame = vec![6, 0, 0, 0, 1];
    oer::write_length(&mut frame, data.len());
    frame.extend_from_slice(data);
    let message = match btp::Message::parse(&frame) {
        Ok(message) => message,
        Err(e) => return refused(e, e.offset, frame.len()),
    };
    let protocol_data = message.protocol_data();
    let entries = check_protocol_data(protocol_data);
    let rebuilt = ProtocolData::new(&entries).expect("parsed entries are valid to build with");
    assert_eq!(rebuilt, protocol_data);
    assert_eq!(protocol_data.encoded_len(), data.len());
    let mut encoded = Vec::with_capacity(data.len());
    rebuilt.write_to(&mut encoded);
    assert_eq!(encoded, data, "rebuilt protocol data serializes as it came");
    Outcome::Accepted
}

/// The auth Message a server reads first on every connection, up to the account name it binds.
pub fn btp_auth(data: &[u8]) -> Outcome {
    let message = match btp::Packet::parse(data) {
        Ok(btp::Packet::Message(message)) => message,
        Ok(_) => return Outcome::Rejected,
        Err(e) => return refused(e, e.offset, data.len()),
    };
    let auth = match AuthRequest::from_message(&message) {
        Ok(auth) => auth,
        Err(e) => return refused(e, 0, data.len()),
    };
    let protocol_data = message.protocol_data();
    assert_eq!(protocol_data.primary().map(|e| e.name), Some(btp::AUTH));
    assert_eq!(
        protocol_data.get(btp::AUTH_TOKEN).map(|e| e.data),
        Some(auth.token.as_bytes())
    );
    let _ = auth::hash_token(auth.token.as_bytes());
    match auth::account_name(auth.username, auth.token.as_bytes()) {
        Ok(account) => {
            match auth.username {
                Some(username) if !username.is_empty() => assert_eq!(account, username),
                _ => assert_eq!(account, auth::account_for_token(auth.token.as_bytes())),
            }
            // Every account name is one ILP address segment: the IL-DCP answer appends it.
            assert!(
                ilp::address::validate_segment(&account).is_ok(),
                "{account:?}"
            );
            let hub = ilp::Address::new("example.hub").expect("a valid address");
            let _ = hub.with_suffix(&account);
            Outcome::Accepted
        }
        Err(e) => {
            assert!(auth.username.is_some_and(|u| !u.is_empty()));
            refused(e, 0, data.len())
        }
    }
}

/// A `btp+ws://` URI, as a client's configuration gives it.
pub fn btp_uri(data: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(data) else {
        return Outcome::Rejected;
    };
    match btp::BtpUri::parse(text) {
        Ok(uri) => {
            assert!(!uri.host.is_empty());
            assert_ne!(uri.port, 0);
            assert!(uri.path.starts_with('/'), "{uri:?}");
            assert!(uri.websocket_url().starts_with("ws://"));
            assert!(uri.username.as_deref() != Some(""));
            if let Some(token) = uri.token.as_deref().filter(|t| t.len() > 8) {
                // Debug output is what gets logged: never the token.
                let shown = format!("{uri:?}");
                let elsewhere = uri.host.contains(token)
                    || uri.path.contains(token)
                    || uri.username.as_deref().is_some_and(|u| u.contains(token));
                // As a field, the token would show quoted; unquoted, its text can also be
                // made of another field's escapes (`\0` then `cecret...`).
                let as_field = format!("{token:?}");
                assert!(
                    elsewhere || !shown.contains(&as_field),
                    "token logged: {shown}"
                );
            }
            Outcome::Accepted
        }
        Err(e) => refused(e, 0, data.len()),
    }
}

/// LND's answer to GetInfo.
pub fn lnd_get_info(data: &[u8]) -> Outcome {
    let info = match lightning::GetInfoResponse::parse_from_bytes(data) {
        Ok(info) => info,
        Err(e) => return refused(e, 0, data.len()),
    };
    match convert::node_info(&info) {
        Ok(node) => {
            assert_eq!(
                node.pubkey.to_hex(),
                info.identity_pubkey.to_ascii_lowercase()
            );
            assert!(matches!(node.pubkey.0[0], 2 | 3));
            let _ = node.network.to_string();
            Outcome::Accepted
        }
        Err(e) => refused(e, 0, data.len()),
    }
}

/// An invoice, as LookupInvoice and SubscribeInvoices return it.
pub fn lnd_invoice(data: &[u8]) -> Outcome {
    let invoice = match lightning::Invoice::parse_from_bytes(data) {
        Ok(invoice) => invoice,
        Err(e) => return refused(e, 0, data.len()),
    };
    match convert::invoice(&invoice) {
        Ok(converted) => {
            assert_eq!(converted.payment_hash.0[..], invoice.r_hash[..]);
            assert!(i64::try_from(converted.amount_paid_msat).is_ok());
            let _ = converted.custom_records();
            // A subscription moves its cursor past every invoice it reads.
            let mut cursor = InvoiceCursor::default();
            cursor.advance(&converted);
            Outcome::Accepted
        }
        Err(e) => refused(e, 0, data.len()),
    }
}

/// One update of a payment from SendPaymentV2 or TrackPaymentV2. The first byte chooses the
/// hash the caller asked about (none, the update's own, or another); the rest is the message.
pub fn lnd_payment(data: &[u8]) -> Outcome {
    let Some((&selector, message)) = data.split_first() else {
        return Outcome::Rejected;
    };
    let payment = match lightning::Payment::parse_from_bytes(message) {
        Ok(payment) => payment,
        Err(e) => return refused(e, 0, data.len()),
    };
    let own = PaymentHash::from_hex(&payment.payment_hash, "payment_hash").ok();
    let other = PaymentHash([selector; 32]);
    let expected = match selector % 3 {
        0 => None,
        1 => Some(own.as_ref().unwrap_or(&other)),
        _ => Some(&other),
    };
    match convert::payment(&payment, expected) {
        Ok(outcome) => {
            if let Some(expected) = expected {
                assert_eq!(&outcome.payment_hash, expected);
            }
            if let PaymentStatus::Succeeded { preimage, .. } = &outcome.status {
                assert_eq!(preimage.payment_hash(), outcome.payment_hash);
            }
            Outcome::Accepted
        }
        Err(e) => {
            let _ = e.payment_certainty();
            refused(e, 0, data.len())
        }
    }
}
