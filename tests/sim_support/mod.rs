//! A raw LND client for the simulator tests (tests/sim_*.rs): grpcio calls built from the
//! `lnd::methods` descriptors over TLS with the macaroon in metadata — what any LND client in
//! any language sends — and the checks those tests share. Each test binary uses a part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use futures::executor::block_on_stream;
use grpcio::{CallOption, ChannelBuilder, ChannelCredentialsBuilder, Environment, MetadataBuilder};
use ilp_plugin_lightning::lnd::methods;
use ilp_plugin_lightning::lnd::proto::{lightning, router};
use ilp_plugin_lightning::lnd::sim::{ChannelPolicy, SimNetwork, SimNode};
use lightning::payment::PaymentStatus;
use lightning::PaymentFailureReason as Reason;

/// Long enough for a loaded machine; only a broken simulator waits this long.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A blocking iterator over a server stream.
pub type Stream<T> = futures::executor::BlockingStream<grpcio::ClientSStreamReceiver<T>>;

/// A raw LND client for one node.
pub struct Lnd {
    pub client: grpcio::Client,
    pub macaroon_hex: String,
}

impl Lnd {
    pub fn connect(env: &Arc<Environment>, node: &SimNode) -> Lnd {
        Lnd::connect_with(env, node, node.macaroon_hex())
    }

    /// With another macaroon (hex, sent as is; none if empty).
    pub fn connect_with(env: &Arc<Environment>, node: &SimNode, macaroon_hex: String) -> Lnd {
        let credentials = ChannelCredentialsBuilder::new()
            .root_cert(node.tls_cert_pem().as_bytes().to_vec())
            .build();
        let channel = ChannelBuilder::new(env.clone())
            .set_credentials(credentials)
            .connect(&format!("localhost:{}", node.port()));
        Lnd {
            client: grpcio::Client::new(channel),
            macaroon_hex,
        }
    }

    pub fn options(&self) -> CallOption {
        let mut metadata = MetadataBuilder::new();
        if !self.macaroon_hex.is_empty() {
            metadata.add_str("macaroon", &self.macaroon_hex).unwrap();
        }
        CallOption::default()
            .headers(metadata.build())
            .timeout(DEADLINE)
    }

    pub fn call<Req, Resp: Unpin>(
        &self,
        method: &grpcio::Method<Req, Resp>,
        request: &Req,
    ) -> Result<Resp, grpcio::RpcStatus> {
        self.client
            .unary_call(method, request, self.options())
            .map_err(status)
    }

    pub fn stream<Req, Resp: 'static>(
        &self,
        method: &grpcio::Method<Req, Resp>,
        request: &Req,
    ) -> Stream<Resp> {
        block_on_stream(
            self.client
                .server_streaming(method, request, self.options())
                .unwrap(),
        )
    }

    pub fn get_info(&self) -> lightning::GetInfoResponse {
        self.call(&methods::GET_INFO, &lightning::GetInfoRequest::new())
            .unwrap()
    }

    pub fn add_invoice(
        &self,
        memo: &str,
        value_sat: i64,
        expiry: i64,
    ) -> lightning::AddInvoiceResponse {
        let mut invoice = lightning::Invoice::new();
        invoice.memo = memo.to_string();
        invoice.value = value_sat;
        invoice.expiry = expiry;
        self.call(&methods::ADD_INVOICE, &invoice).unwrap()
    }

    pub fn lookup(&self, hash: &[u8]) -> Result<lightning::Invoice, grpcio::RpcStatus> {
        let mut request = lightning::PaymentHash::new();
        request.r_hash = hash.to_vec();
        self.call(&methods::LOOKUP_INVOICE, &request)
    }

    pub fn channel_balance(&self) -> lightning::ChannelBalanceResponse {
        self.call(
            &methods::CHANNEL_BALANCE,
            &lightning::ChannelBalanceRequest::new(),
        )
        .unwrap()
    }

    /// Every update of a SendPaymentV2 stream, or the status it was refused (or broken) with.
    pub fn send(
        &self,
        request: &router::SendPaymentRequest,
    ) -> Result<Vec<lightning::Payment>, grpcio::RpcStatus> {
        self.stream(&methods::SEND_PAYMENT_V2, request)
            .map(|update| update.map_err(status))
            .collect()
    }

    /// Pays and checks the shape of LND's stream: IN_FLIGHT (no HTLC yet), IN_FLIGHT again once
    /// an HTLC is out (when a route was found), then the end. Returns the last update.
    pub fn pay(
        &self,
        payment_request: &str,
        amt_sat: i64,
        fee_limit_msat: i64,
    ) -> lightning::Payment {
        let updates = self
            .send(&pay_request(payment_request, amt_sat, fee_limit_msat))
            .unwrap();
        let last = updates.last().unwrap().clone();
        let statuses: Vec<_> = updates
            .iter()
            .map(|u| u.status.enum_value().unwrap())
            .collect();
        let (end, progress) = statuses.split_last().unwrap();
        assert!(
            !progress.is_empty() && progress.iter().all(|s| *s == PaymentStatus::IN_FLIGHT),
            "{statuses:?}"
        );
        assert!(progress.len() <= 2, "{statuses:?}");
        assert!(
            matches!(end, PaymentStatus::SUCCEEDED | PaymentStatus::FAILED),
            "{statuses:?}"
        );
        last
    }

    /// Every update of TrackPaymentV2 for `hash` until the stream ends, or its error.
    pub fn track(&self, hash: &[u8]) -> Result<Vec<lightning::Payment>, grpcio::RpcStatus> {
        let mut request = router::TrackPaymentRequest::new();
        request.payment_hash = hash.to_vec();
        self.stream(&methods::TRACK_PAYMENT_V2, &request)
            .map(|update| update.map_err(status))
            .collect()
    }
}

pub fn next(stream: &mut Stream<lightning::Invoice>) -> lightning::Invoice {
    stream
        .next()
        .expect("an invoice event")
        .expect("no stream error")
}

pub fn status(error: grpcio::Error) -> grpcio::RpcStatus {
    match error {
        grpcio::Error::RpcFailure(status) => status,
        other => panic!("expected an RPC status, got {other:?}"),
    }
}

pub fn env() -> Arc<Environment> {
    Arc::new(Environment::new(1))
}

/// alice — bob, 1 000 000 sat, half on each side, LND's default fees; alice opened it.
pub fn two_nodes() -> SimNetwork {
    SimNetwork::builder()
        .node("alice")
        .node("bob")
        .channel("alice", "bob", 1_000_000, ChannelPolicy::default())
        .start()
        .unwrap()
}

/// alice — bob — carol, 1 000 000 sat channels, fees 1 sat + 1 ppm.
pub fn three_in_a_row() -> SimNetwork {
    let policy = ChannelPolicy {
        base_fee_msat: 1000,
        fee_ppm: 1,
    };
    SimNetwork::builder()
        .node("alice")
        .node("bob")
        .node("carol")
        .channel("alice", "bob", 1_000_000, policy)
        .channel("bob", "carol", 1_000_000, policy)
        .start()
        .unwrap()
}

pub fn pay_request(
    payment_request: &str,
    amt_sat: i64,
    fee_limit_msat: i64,
) -> router::SendPaymentRequest {
    let mut request = router::SendPaymentRequest::new();
    request.payment_request = payment_request.to_string();
    request.amt = amt_sat;
    request.fee_limit_msat = fee_limit_msat;
    request.timeout_seconds = 30;
    request
}

pub fn succeeded(payment: &lightning::Payment) {
    assert_eq!(
        payment.status.enum_value(),
        Ok(PaymentStatus::SUCCEEDED),
        "{payment:?}"
    );
}

pub fn failed_with(payment: &lightning::Payment, reason: Reason) {
    assert_eq!(
        payment.status.enum_value(),
        Ok(PaymentStatus::FAILED),
        "{payment:?}"
    );
    assert_eq!(
        payment.failure_reason.enum_value(),
        Ok(reason),
        "{payment:?}"
    );
}

/// No money made or lost: the network's total is what it was, and every channel's balances,
/// HTLCs in flight and opening cost add up to its capacity.
pub fn conserved(net: &SimNetwork, total_msat: u64) {
    assert_eq!(net.total_balance_msat(), total_msat);
    for channel in net.channel_balances() {
        assert_eq!(
            channel.balance_a_msat
                + channel.balance_b_msat
                + channel.in_flight_msat
                + channel.opening_cost_msat,
            channel.capacity_sat * 1000,
            "{channel:?}"
        );
    }
}
