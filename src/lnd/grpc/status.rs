//! gRPC failures to [`LndError`]s, by status code and by LND's message texts (LND returns most
//! of its own errors as `UNKNOWN` with a Go error string).

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
        // Never echo metadata errors: the only metadata we send is the macaroon.
        grpcio::Error::InvalidMetadata(_) => LndError::Config(format!(
            "{call}: the macaroon cannot be sent as gRPC metadata"
        )),
        grpcio::Error::QueueShutdown => {
            LndError::Other(format!("{call}: the gRPC client is shutting down"))
        }
        other => LndError::Other(format!("{call}: {other}")),
    }
}

/// Maps a gRPC status code and message.
pub(crate) fn from_status(code: RpcStatusCode, message: &str, call: &str) -> LndError {
    let lower = message.to_ascii_lowercase();
    let msg = || format!("{call}: {message}");
    // Messages first: LND's texts are more precise than its (mostly UNKNOWN) codes.
    if lower.contains("invoice is already paid") {
        return LndError::AlreadyPaid;
    }
    if lower.contains("payment is in transition") || lower.contains("payment already exists") {
        return LndError::PaymentInTransition;
    }
    if lower.contains("invoice expired") {
        return LndError::InvoiceExpired(msg());
    }
    if lower.contains("unable to locate invoice")
        || lower.contains("payment isn't initiated")
        || lower.contains("there are no existing invoices")
    {
        return LndError::NotFound(msg());
    }
    if lower.contains("macaroon")
        || lower.contains("verification failed")
        || lower.contains("permission denied")
    {
        return LndError::Unauthenticated(msg());
    }
    if lower.contains("wallet locked")
        || lower.contains("in the process of starting")
        || lower.contains("server is still in the process")
        || lower.contains("not yet ready to accept calls")
    {
        return LndError::NotReady(msg());
    }
    if lower.contains("unable to find a path") {
        return LndError::NoRoute;
    }
    if lower.contains("insufficient local balance") {
        return LndError::InsufficientBalance;
    }
    match code {
        RpcStatusCode::UNAVAILABLE | RpcStatusCode::UNKNOWN if is_tls_failure(&lower) => {
            LndError::Tls(msg())
        }
        RpcStatusCode::UNAVAILABLE => LndError::Unreachable(msg()),
        RpcStatusCode::UNAUTHENTICATED | RpcStatusCode::PERMISSION_DENIED => {
            LndError::Unauthenticated(msg())
        }
        RpcStatusCode::NOT_FOUND => LndError::NotFound(msg()),
        RpcStatusCode::DEADLINE_EXCEEDED => LndError::Timeout(msg()),
        RpcStatusCode::UNIMPLEMENTED => LndError::Unsupported(format!(
            "{call} is not offered by this node (older LND, or built without the sub-server): \
             {message}"
        )),
        RpcStatusCode::CANCELLED => LndError::StreamEnded(msg()),
        RpcStatusCode::INVALID_ARGUMENT | RpcStatusCode::OUT_OF_RANGE => {
            LndError::InvalidRequest(msg())
        }
        RpcStatusCode::FAILED_PRECONDITION => LndError::InvalidRequest(msg()),
        RpcStatusCode::RESOURCE_EXHAUSTED => LndError::Other(format!(
            "{call}: {message} (a message exceeded a size limit)"
        )),
        _ if is_invalid_request(&lower) => LndError::InvalidRequest(msg()),
        _ => LndError::Other(format!("{call}: {code:?} {message}")),
    }
}

fn is_tls_failure(lower: &str) -> bool {
    ["ssl", "tls", "handshake", "certificate"]
        .iter()
        .any(|needle| lower.contains(needle))
}

/// LND's validation messages (sent as UNKNOWN) for requests it will never accept.
fn is_invalid_request(lower: &str) -> bool {
    [
        "amount must be specified",
        "amount must not be specified",
        "self-payments not allowed",
        "cannot appear together",
        "greater than max expiry",
        "memo too large",
        "negative value",
        "invoice already settled",
        "invoice not canceled",
        "invoice hash must be provided",
        "no custom records with types below",
        "invalid payment request",
        "invoice not for current active network",
        "checksum failed",
        "already exists",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(code: RpcStatusCode, message: &str) -> LndError {
        from_status(code, message, "Call")
    }

    #[test]
    fn lnd_payment_texts() {
        assert_eq!(
            map(RpcStatusCode::ALREADY_EXISTS, "invoice is already paid"),
            LndError::AlreadyPaid
        );
        assert_eq!(
            map(RpcStatusCode::ALREADY_EXISTS, "payment is in transition"),
            LndError::PaymentInTransition
        );
        assert!(matches!(
            map(
                RpcStatusCode::UNKNOWN,
                "invoice expired. Valid until 2024-01-01 00:00:00 +0000 UTC"
            ),
            LndError::InvoiceExpired(_)
        ));
        assert!(matches!(
            map(
                RpcStatusCode::UNKNOWN,
                "amount must be specified when paying a zero amount invoice"
            ),
            LndError::InvalidRequest(_)
        ));
        assert!(matches!(
            map(RpcStatusCode::UNKNOWN, "invoice already settled"),
            LndError::InvalidRequest(_)
        ));
        assert_eq!(
            map(
                RpcStatusCode::UNKNOWN,
                "unable to find a path to destination"
            ),
            LndError::NoRoute
        );
    }

    #[test]
    fn not_found_by_code_and_text() {
        assert!(matches!(
            map(RpcStatusCode::NOT_FOUND, "unable to locate invoice"),
            LndError::NotFound(_)
        ));
        assert!(matches!(
            map(RpcStatusCode::UNKNOWN, "unable to locate invoice"),
            LndError::NotFound(_)
        ));
        assert!(matches!(
            map(RpcStatusCode::NOT_FOUND, "payment isn't initiated"),
            LndError::NotFound(_)
        ));
    }

    #[test]
    fn authentication_and_readiness() {
        assert!(matches!(
            map(RpcStatusCode::UNKNOWN, "expected 1 macaroon, got 0"),
            LndError::Unauthenticated(_)
        ));
        assert!(matches!(
            map(
                RpcStatusCode::UNKNOWN,
                "verification failed: signature mismatch after caveat verification"
            ),
            LndError::Unauthenticated(_)
        ));
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
