//! gRPC method descriptors for the LND calls this crate makes and the simulator serves.
//!
//! grpcio's code generator only speaks protobuf 2, so these few descriptors are written by hand.
//! The paths are LND's own (`/package.Service/Method`); the client (`lnd::grpc`) and the
//! simulator's server (`lnd::sim`) share them, so the two cannot drift apart.

use grpcio::{Marshaller, Method, MethodType};

use super::proto::{invoices, lightning, router};

macro_rules! method {
    ($(#[$doc:meta])* $name:ident, $ty:ident, $path:literal, $req:ty, $resp:ty) => {
        $(#[$doc])*
        pub const $name: Method<$req, $resp> = Method {
            ty: MethodType::$ty,
            name: $path,
            req_mar: Marshaller {
                ser: grpcio::pb_ser,
                de: grpcio::pb_de,
            },
            resp_mar: Marshaller {
                ser: grpcio::pb_ser,
                de: grpcio::pb_de,
            },
        };
    };
}

method!(
    /// The node's identity, version and chain.
    GET_INFO, Unary, "/lnrpc.Lightning/GetInfo",
    lightning::GetInfoRequest, lightning::GetInfoResponse
);
method!(
    /// Creates an invoice.
    ADD_INVOICE, Unary, "/lnrpc.Lightning/AddInvoice",
    lightning::Invoice, lightning::AddInvoiceResponse
);
method!(
    /// One invoice by payment hash; `NOT_FOUND` when unknown.
    LOOKUP_INVOICE, Unary, "/lnrpc.Lightning/LookupInvoice",
    lightning::PaymentHash, lightning::Invoice
);
method!(
    /// A page of invoices by add index.
    LIST_INVOICES, Unary, "/lnrpc.Lightning/ListInvoices",
    lightning::ListInvoiceRequest, lightning::ListInvoiceResponse
);
method!(
    /// Invoice adds and settles, replayed from the given indexes, then live.
    SUBSCRIBE_INVOICES, ServerStreaming, "/lnrpc.Lightning/SubscribeInvoices",
    lightning::InvoiceSubscription, lightning::Invoice
);
method!(
    /// Decodes a BOLT11 payment request.
    DECODE_PAY_REQ, Unary, "/lnrpc.Lightning/DecodePayReq",
    lightning::PayReqString, lightning::PayReq
);
method!(
    /// Deletes a cancelled invoice (LND 0.20 and later).
    DELETE_CANCELED_INVOICE, Unary, "/lnrpc.Lightning/DeleteCanceledInvoice",
    lightning::DelCanceledInvoiceReq, lightning::DelCanceledInvoiceResp
);
method!(
    /// Local and remote balances over all channels.
    CHANNEL_BALANCE, Unary, "/lnrpc.Lightning/ChannelBalance",
    lightning::ChannelBalanceRequest, lightning::ChannelBalanceResponse
);
method!(
    /// The node's channels.
    LIST_CHANNELS, Unary, "/lnrpc.Lightning/ListChannels",
    lightning::ListChannelsRequest, lightning::ListChannelsResponse
);
method!(
    /// Sends a payment and streams its updates until it succeeds or fails.
    SEND_PAYMENT_V2, ServerStreaming, "/routerrpc.Router/SendPaymentV2",
    router::SendPaymentRequest, lightning::Payment
);
method!(
    /// Streams the updates of a payment already started, by hash; `NOT_FOUND` when unknown.
    TRACK_PAYMENT_V2, ServerStreaming, "/routerrpc.Router/TrackPaymentV2",
    router::TrackPaymentRequest, lightning::Payment
);
method!(
    /// Cancels an open invoice; fails on a settled one.
    CANCEL_INVOICE, Unary, "/invoicesrpc.Invoices/CancelInvoice",
    invoices::CancelInvoiceMsg, invoices::CancelInvoiceResp
);
method!(
    /// LND 0.20 and earlier: the bidirectional payment stream the JavaScript
    /// ilp-plugin-lightning pays through (a `SendResponse` per `SendRequest`, in no set order).
    /// LND 0.21 removed it.
    SEND_PAYMENT, Duplex, "/lnrpc.Lightning/SendPayment",
    lightning::SendRequest, lightning::SendResponse
);
method!(
    /// LND 0.20 and earlier: one payment, answered once it is final. LND 0.21 removed it.
    SEND_PAYMENT_SYNC, Unary, "/lnrpc.Lightning/SendPaymentSync",
    lightning::SendRequest, lightning::SendResponse
);
