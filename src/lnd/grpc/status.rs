//! gRPC failures to [`LndError`]s.
//!
//! The status code decides; LND's message texts (it reports most of its own errors as UNKNOWN
//! with a Go error string) only refine the variant where no money is at stake: a refused
//! macaroon, a node not ready, an expired invoice, or which of LND's ALREADY_EXISTS cases it is.
//! No text can make an error say "not paid": [`LndError::NotFound`] comes from the NOT_FOUND code
//! alone, and the final payment failures only from a FAILED payment update. Errors of the calls
//! that pay go through [`during_payment`] on top.

use grpcio::RpcStatusCode;

use crate::lnd::LndError;

/// Maps a grpcio error of the call `call` (a method name, for messages).
pub(crate) fn from_grpc(error: grpcio::Error, call: &str) -> LndError {
    match error {
        grpcio::Error::RpcFailure(status) => from_status(status.code(), status.message(), call),
        grpcio::Error::RpcFinished(Some(status)) => {
            from_status(status.code(), status.message(), call)
        }
        grpcio::Error::RpcFinished(None) => {
            LndError::StreamEnded(format!("{call}: the call finished early"))
        }
        grpcio::Error::Codec(e) => {
            LndError::BadResponse(format!("{call}: cannot decode the message: {e}"))
        }
        grpcio::Error::RemoteStopped => {
            LndError::Unreachable(format!("{call}: the node stopped the call"))
        }
        // Never echo metadata errors: the only metadata we send is the macaroon. They are raised
        // while the call is being built, before anything is sent.
        grpcio::Error::InvalidMetadata(_) => LndError::Config(format!(
            "{call}: the macaroon cannot be sent as gRPC metadata"
        )),
        grpcio::Error::QueueShutdown => {
            LndError::Other(format!("{call}: the gRPC client is shutting down"))
        }
        other => LndError::Other(format!("{call}: {other}")),
    }
}

/// An error of a call that pays (SendPaymentV2, keysend), from the node or the transport: the
/// node may have dispatched the payment, so nothing here may read as "not paid". NOT_FOUND is
/// TrackPaymentV2's answer for a payment never started; from a payment call it proves nothing.
pub(crate) fn during_payment(error: LndError) -> LndError {
    match error {
        LndError::NotFound(message) => LndError::Other(format!(
            "{message} (NOT_FOUND while paying: the payment's outcome is unknown)"
        )),
        other => other,
    }
}

/// Maps a gRPC status code and message.
pub(crate) fn from_status(code: RpcStatusCode, message: &str, call: &str) -> LndError {
    let lower = message.to_ascii_lowercase();
    let msg = || format!("{call}: {message}");
    match code {
        RpcStatusCode::NOT_FOUND => LndError::NotFound(msg()),
        RpcStatusCode::ALREADY_EXISTS => {
            // LND's control tower (`payments/db/errors.go`); all three leave the payment to be
            // tracked, the text only says which.
            if lower.contains("invoice is already paid") {
                LndError::AlreadyPaid
            } else if lower.contains("payment is in transition")
                || lower.contains("payment already exists")
            {
                LndError::PaymentInTransition
            } else {
                LndError::Refused(msg())
            }
        }
        RpcStatusCode::UNAVAILABLE | RpcStatusCode::UNKNOWN if is_tls_failure(&lower) => {
            LndError::Tls(msg())
        }
        RpcStatusCode::UNAVAILABLE => LndError::Unreachable(msg()),
        RpcStatusCode::UNAUTHENTICATED | RpcStatusCode::PERMISSION_DENIED => {
            LndError::Unauthenticated(msg())
        }
        RpcStatusCode::DEADLINE_EXCEEDED => LndError::Timeout(msg()),
        RpcStatusCode::UNIMPLEMENTED => LndError::Unsupported(format!(
            "{call} is not offered by this node (older LND, or built without the sub-server): \
             {message}"
        )),
        RpcStatusCode::CANCELLED => LndError::StreamEnded(msg()),
        RpcStatusCode::INVALID_ARGUMENT
        | RpcStatusCode::OUT_OF_RANGE
        | RpcStatusCode::FAILED_PRECONDITION => LndError::Refused(msg()),
        RpcStatusCode::RESOURCE_EXHAUSTED => LndError::Other(format!(
            "{call}: {message} (a message exceeded a size limit)"
        )),
        RpcStatusCode::UNKNOWN => from_lnd_text(&lower, msg()),
        _ => LndError::Other(format!("{call}: {code:?} {message}")),
    }
}

/// LND's own errors, sent as UNKNOWN with the Go error's text.
fn from_lnd_text(lower: &str, message: String) -> LndError {
    // `macaroons/service.go` and `rpcperms/interceptor.go`: "expected 1 macaroon, got 0",
    // "verification failed: signature mismatch after caveat verification", "permission
    // denied", "cannot get macaroon: ...".
    if lower.contains("macaroon")
        || lower.contains("verification failed")
        || lower.contains("permission denied")
    {
        return LndError::Unauthenticated(message);
    }
    if lower.contains("wallet locked")
        || lower.contains("in the process of starting")
        || lower.contains("not yet ready to accept calls")
    {
        return LndError::NotReady(message);
    }
    if lower.contains("invoice expired") {
        return LndError::InvoiceExpired(message);
    }
    if is_refusal(lower) {
        return LndError::Refused(message);
    }
    LndError::Other(message)
}

fn is_tls_failure(lower: &str) -> bool {
    ["ssl", "tls", "handshake", "certificate"]
        .iter()
        .any(|needle| lower.contains(needle))
}

/// LND's validation texts for requests it will not carry out as asked.
fn is_refusal(lower: &str) -> bool {
    [
        "amount must be specified",
        "amount must not be specified",
        "amount cannot be negative",
        "mutually exclusive",
        "self-payments not allowed",
        "cannot appear together",
        "greater than max expiry",
        "greater than minimum of",
        "is too large",
        "memo too large",
        "negative value",
        "invoice already settled",
        "invoice not canceled",
        "invoice hash must be provided",
        "unable to locate invoice",
        "no custom records with types below",
        "invalid payment request",
        "invoice not for current active network",
        "checksum failed",
        "already exists",
        "invalid hash length",
        "invalid vertex length",
        "encoding/hex",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lnd::PaymentCertainty;

    fn map(code: RpcStatusCode, message: &str) -> LndError {
        from_status(code, message, "Call")
    }

    /// Every status code the node or the transport can send during a payment, with LND's texts
    /// and some others: none of them says "not paid" — except NOT_FOUND, which is
    /// TrackPaymentV2's "never initiated" and which `during_payment` turns into unknown.
    #[test]
    fn no_status_proves_a_payment_failed() {
        let texts = [
            "",
            "invoice is already paid",
            "payment is in transition",
            "payment already exists",
            "unable to find a path to destination",
            "insufficient local balance",
            "invoice expired. Valid until 2024-01-01 00:00:00 +0000 UTC",
            "amount must be specified when paying a zero amount invoice",
            "self-payments not allowed",
            "expected 1 macaroon, got 0",
            "verification failed: signature mismatch after caveat verification",
            "unable to locate invoice",
            "payment isn't initiated",
            "Ssl handshake failed",
            "Socket closed",
            "wallet locked, unlock it to enable full RPC access",
        ];
        let codes = [
            RpcStatusCode::OK,
            RpcStatusCode::CANCELLED,
            RpcStatusCode::UNKNOWN,
            RpcStatusCode::INVALID_ARGUMENT,
            RpcStatusCode::DEADLINE_EXCEEDED,
            RpcStatusCode::NOT_FOUND,
            RpcStatusCode::ALREADY_EXISTS,
            RpcStatusCode::PERMISSION_DENIED,
            RpcStatusCode::RESOURCE_EXHAUSTED,
            RpcStatusCode::FAILED_PRECONDITION,
            RpcStatusCode::ABORTED,
            RpcStatusCode::OUT_OF_RANGE,
            RpcStatusCode::UNIMPLEMENTED,
            RpcStatusCode::INTERNAL,
            RpcStatusCode::UNAVAILABLE,
            RpcStatusCode::DATA_LOSS,
            RpcStatusCode::UNAUTHENTICATED,
        ];
        for code in codes {
            for text in texts {
                let error = map(code, text);
                let expected = if code == RpcStatusCode::NOT_FOUND {
                    PaymentCertainty::NotPaid
                } else {
                    PaymentCertainty::Unknown
                };
                assert_eq!(
                    error.payment_certainty(),
                    expected,
                    "{code:?} {text:?}: {error:?}"
                );
                assert_eq!(
                    during_payment(error).payment_certainty(),
                    PaymentCertainty::Unknown,
                    "{code:?} {text:?} during a payment"
                );
            }
        }
        for stream_error in [
            grpcio::Error::RpcFinished(None),
            grpcio::Error::RemoteStopped,
            grpcio::Error::QueueShutdown,
            grpcio::Error::Codec(Box::new(std::io::Error::other("truncated"))),
        ] {
            let error = during_payment(from_grpc(stream_error, "SendPaymentV2"));
            assert_eq!(
                error.payment_certainty(),
                PaymentCertainty::Unknown,
                "{error}"
            );
        }
    }

    #[test]
    fn texts_only_choose_among_unknowns() {
        assert_eq!(
            map(RpcStatusCode::ALREADY_EXISTS, "invoice is already paid"),
            LndError::AlreadyPaid
        );
        assert_eq!(
            map(RpcStatusCode::ALREADY_EXISTS, "payment is in transition"),
            LndError::PaymentInTransition
        );
        assert_eq!(
            map(RpcStatusCode::ALREADY_EXISTS, "payment already exists"),
            LndError::PaymentInTransition
        );
        // The same texts with another code are not taken at their word.
        assert!(matches!(
            map(RpcStatusCode::UNKNOWN, "invoice is already paid"),
            LndError::Other(_)
        ));
        assert!(matches!(
            map(
                RpcStatusCode::UNKNOWN,
                "invoice expired. Valid until 2024-01-01 00:00:00 +0000 UTC"
            ),
            LndError::InvoiceExpired(_)
        ));
        for refusal in [
            "amount must be specified when paying a zero amount invoice",
            "invoice already settled",
            "self-payments not allowed",
            "unable to locate invoice",
            "CLTV delta of 20 must be greater than minimum of 24",
        ] {
            assert!(
                matches!(map(RpcStatusCode::UNKNOWN, refusal), LndError::Refused(_)),
                "{refusal}"
            );
        }
        // Words that used to pick a final failure do not any more.
        assert!(matches!(
            map(
                RpcStatusCode::UNKNOWN,
                "unable to find a path to destination"
            ),
            LndError::Other(_)
        ));
        assert!(matches!(
            map(RpcStatusCode::UNKNOWN, "insufficient local balance"),
            LndError::Other(_)
        ));
    }

    #[test]
    fn not_found_comes_from_the_code_only() {
        assert!(matches!(
            map(RpcStatusCode::NOT_FOUND, "unable to locate invoice"),
            LndError::NotFound(_)
        ));
        assert!(matches!(
            map(RpcStatusCode::NOT_FOUND, "payment isn't initiated"),
            LndError::NotFound(_)
        ));
        assert!(matches!(
            map(RpcStatusCode::UNKNOWN, "payment isn't initiated"),
            LndError::Other(_)
        ));
    }

    /// LND `macaroons/service.go` `ValidateMacaroon`, through `rpcperms/interceptor.go`: plain
    /// errors, so UNKNOWN with these texts.
    #[test]
    fn authentication_and_readiness() {
        for text in [
            "expected 1 macaroon, got 0",
            "expected 1 macaroon, got 2",
            "verification failed: signature mismatch after caveat verification",
            "permission denied",
        ] {
            assert!(
                matches!(
                    map(RpcStatusCode::UNKNOWN, text),
                    LndError::Unauthenticated(_)
                ),
                "{text}"
            );
        }
        assert!(matches!(
            map(RpcStatusCode::UNAUTHENTICATED, "bad credentials"),
            LndError::Unauthenticated(_)
        ));
        assert!(matches!(
            map(
                RpcStatusCode::UNKNOWN,
                "wallet locked, unlock it to enable full RPC access"
            ),
            LndError::NotReady(_)
        ));
        assert!(matches!(
            map(
                RpcStatusCode::UNKNOWN,
                "the RPC server is in the process of starting up, but not yet ready to accept \
                 calls"
            ),
            LndError::NotReady(_)
        ));
    }

    #[test]
    fn transport_failures() {
        assert!(matches!(
            map(
                RpcStatusCode::UNAVAILABLE,
                "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:1: \
                 Connection refused"
            ),
            LndError::Unreachable(_)
        ));
        assert!(matches!(
            map(
                RpcStatusCode::UNAVAILABLE,
                "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Ssl \
                 handshake failed: SSL_ERROR_SSL: CERTIFICATE_VERIFY_FAILED"
            ),
            LndError::Tls(_)
        ));
        assert!(matches!(
            map(RpcStatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded"),
            LndError::Timeout(_)
        ));
        assert!(matches!(
            map(RpcStatusCode::UNIMPLEMENTED, ""),
            LndError::Unsupported(_)
        ));
        assert!(matches!(
            map(RpcStatusCode::CANCELLED, "Cancelled"),
            LndError::StreamEnded(_)
        ));
        assert!(matches!(
            map(RpcStatusCode::INTERNAL, "boom"),
            LndError::Other(m) if m.contains("boom") && m.contains("Call")
        ));
    }

    #[test]
    fn metadata_errors_do_not_echo() {
        let e = from_grpc(
            grpcio::Error::InvalidMetadata("0201abcdef".into()),
            "GetInfo",
        );
        assert!(!e.to_string().contains("0201abcdef"));
        assert!(matches!(e, LndError::Config(_)));
        assert!(matches!(
            from_grpc(
                grpcio::Error::RpcFailure(grpcio::RpcStatus::with_message(
                    RpcStatusCode::ALREADY_EXISTS,
                    "invoice is already paid".into()
                )),
                "SendPaymentV2"
            ),
            LndError::AlreadyPaid
        ));
    }
}
