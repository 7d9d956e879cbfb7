//! The simulated Lightning network, driven over real TLS gRPC by a raw grpcio client built from
//! the `lnd::methods` descriptors — what any LND client in any language would send.
#![cfg(feature = "sim")]

use std::sync::Arc;
use std::time::Duration;

use futures::executor::block_on_stream;
use grpcio::{
    CallOption, ChannelBuilder, ChannelCredentialsBuilder, Environment, MetadataBuilder,
    RpcStatusCode,
};
use ilp_plugin_lightning::lnd::methods;
use ilp_plugin_lightning::lnd::proto::lightning;
use ilp_plugin_lightning::lnd::sim::{ChannelPolicy, SimNetwork, SimNode};

/// Long enough for a loaded machine; only a broken simulator waits this long.
const DEADLINE: Duration = Duration::from_secs(30);

/// A raw LND client for one node.
struct Lnd {
    client: grpcio::Client,
    macaroon_hex: String,
}

impl Lnd {
    fn connect(env: &Arc<Environment>, node: &SimNode) -> Lnd {
        Lnd::connect_with(env, node, node.macaroon_hex())
    }

    fn connect_with(env: &Arc<Environment>, node: &SimNode, macaroon_hex: String) -> Lnd {
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

    fn options(&self) -> CallOption {
        let mut metadata = MetadataBuilder::new();
        if !self.macaroon_hex.is_empty() {
            metadata.add_str("macaroon", &self.macaroon_hex).unwrap();
        }
        CallOption::default()
            .headers(metadata.build())
            .timeout(DEADLINE)
    }

    fn call<Req, Resp: Unpin>(
        &self,
        method: &grpcio::Method<Req, Resp>,
        request: &Req,
    ) -> Result<Resp, grpcio::RpcStatus> {
        self.client
            .unary_call(method, request, self.options())
            .map_err(status)
    }

    fn stream<Req, Resp: 'static>(
        &self,
        method: &grpcio::Method<Req, Resp>,
        request: &Req,
    ) -> futures::executor::BlockingStream<grpcio::ClientSStreamReceiver<Resp>> {
        block_on_stream(
            self.client
                .server_streaming(method, request, self.options())
                .unwrap(),
        )
    }

    fn add_invoice(
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

    fn lookup(&self, hash: &[u8]) -> Result<lightning::Invoice, grpcio::RpcStatus> {
        let mut request = lightning::PaymentHash::new();
        request.r_hash = hash.to_vec();
        self.call(&methods::LOOKUP_INVOICE, &request)
    }
}

fn status(error: grpcio::Error) -> grpcio::RpcStatus {
    match error {
        grpcio::Error::RpcFailure(status) => status,
        other => panic!("expected an RPC status, got {other:?}"),
    }
}

fn env() -> Arc<Environment> {
    Arc::new(Environment::new(1))
}

fn two_nodes() -> SimNetwork {
    SimNetwork::builder()
        .node("alice")
        .node("bob")
        .channel("alice", "bob", 1_000_000, ChannelPolicy::default())
        .start()
        .unwrap()
}

#[test]
fn get_info_over_tls_identifies_the_node() {
    let net = two_nodes();
    let env = env();
    let alice = net.node("alice").unwrap();
    let info = Lnd::connect(&env, alice)
        .call(&methods::GET_INFO, &lightning::GetInfoRequest::new())
        .unwrap();
    assert_eq!(info.identity_pubkey, alice.pubkey_hex());
    assert_eq!(info.alias, "alice");
    assert_eq!(info.chains.len(), 1);
    assert_eq!(info.chains[0].network, "regtest");
    assert!(info.synced_to_chain && info.synced_to_graph);
    assert!(info.version.contains("beta"), "{}", info.version);
    assert_eq!(info.num_active_channels, 1);
    assert_eq!(alice.grpc_address(), format!("127.0.0.1:{}", alice.port()));

    let bob = net.node("bob").unwrap();
    let bob_info = Lnd::connect(&env, bob)
        .call(&methods::GET_INFO, &lightning::GetInfoRequest::new())
        .unwrap();
    assert_eq!(bob_info.identity_pubkey, bob.pubkey_hex());
    assert_ne!(bob.port(), alice.port());
}

#[test]
fn a_missing_or_wrong_macaroon_is_unauthenticated() {
    let net = two_nodes();
    let env = env();
    let alice = net.node("alice").unwrap();
    let bob = net.node("bob").unwrap();
    let request = lightning::GetInfoRequest::new();

    let missing = Lnd::connect_with(&env, alice, String::new())
        .call(&methods::GET_INFO, &request)
        .unwrap_err();
    assert_eq!(missing.code(), RpcStatusCode::UNAUTHENTICATED);
    assert!(
        missing.message().contains("macaroon"),
        "{}",
        missing.message()
    );

    let wrong = Lnd::connect_with(&env, alice, bob.macaroon_hex())
        .call(&methods::GET_INFO, &request)
        .unwrap_err();
    assert_eq!(wrong.code(), RpcStatusCode::UNAUTHENTICATED);

    let garbage = Lnd::connect_with(&env, alice, "not hex".to_string())
        .call(&methods::GET_INFO, &request)
        .unwrap_err();
    assert_eq!(
        garbage.code(),
        RpcStatusCode::UNAUTHENTICATED,
        "{}",
        garbage.message()
    );

    // Streams are guarded too.
    let intruder = Lnd::connect_with(&env, alice, bob.macaroon_hex());
    let mut stream = intruder.stream(
        &methods::SUBSCRIBE_INVOICES,
        &lightning::InvoiceSubscription::new(),
    );
    let error = status(stream.next().unwrap().unwrap_err());
    assert_eq!(
        error.code(),
        RpcStatusCode::UNAUTHENTICATED,
        "{}",
        error.message()
    );

    // Hex is compared case-insensitively (LND's docs use `xxd -ps -u`).
    let upper = Lnd::connect_with(&env, alice, alice.macaroon_hex().to_uppercase())
        .call(&methods::GET_INFO, &request)
        .unwrap();
    assert_eq!(upper.identity_pubkey, alice.pubkey_hex());
}

#[test]
fn add_invoice_makes_a_bolt11_signed_by_the_node_and_lookup_finds_it() {
    let net = two_nodes();
    let env = env();
    let alice = net.node("alice").unwrap();
    let lnd = Lnd::connect(&env, alice);

    let added = lnd.add_invoice("ilp", 0, 0);
    assert_eq!(added.r_hash.len(), 32);
    assert_eq!(added.add_index, 1);
    let parsed: lightning_invoice::Bolt11Invoice = added.payment_request.parse().unwrap();
    assert_eq!(parsed.currency(), lightning_invoice::Currency::Regtest);
    assert_eq!(parsed.amount_milli_satoshis(), None);
    assert_eq!(parsed.recover_payee_pub_key().serialize(), alice.pubkey());
    assert_eq!(
        bitcoin::hashes::Hash::to_byte_array(*parsed.payment_hash()).to_vec(),
        added.r_hash
    );
    assert_eq!(parsed.expiry_time(), Duration::from_secs(86_400));
    assert_eq!(parsed.payment_secret().0.to_vec(), added.payment_addr);

    let found = lnd.lookup(&added.r_hash).unwrap();
    assert_eq!(found.payment_request, added.payment_request);
    assert_eq!(
        found.state.enum_value(),
        Ok(lightning::invoice::InvoiceState::OPEN)
    );
    assert_eq!(found.add_index, 1);
    assert_eq!(found.memo, "ilp");
    assert_eq!(found.value, 0);
    assert_eq!(found.expiry, 86_400);
    assert_eq!(found.r_preimage.len(), 32);

    let second = lnd.add_invoice("", 1_234, 600);
    assert_eq!(second.add_index, 2);
    let parsed: lightning_invoice::Bolt11Invoice = second.payment_request.parse().unwrap();
    assert_eq!(parsed.amount_milli_satoshis(), Some(1_234_000));
    assert_eq!(parsed.expiry_time(), Duration::from_secs(600));

    let missing = lnd.lookup(&[7u8; 32]).unwrap_err();
    assert_eq!(missing.code(), RpcStatusCode::NOT_FOUND);
    assert_eq!(missing.message(), "unable to locate invoice");
    let short = lnd.lookup(&[7u8; 31]).unwrap_err();
    assert_eq!(short.code(), RpcStatusCode::UNKNOWN);

    let mut too_long = lightning::Invoice::new();
    too_long.expiry = 365 * 24 * 3600 + 1;
    let refused = lnd.call(&methods::ADD_INVOICE, &too_long).unwrap_err();
    assert_eq!(refused.code(), RpcStatusCode::UNKNOWN);
    assert!(
        refused
            .message()
            .contains("greater than max expiry of 31536000 seconds"),
        "{}",
        refused.message()
    );

    // Bob does not know Alice's invoice.
    let bob = Lnd::connect(&env, net.node("bob").unwrap());
    assert_eq!(
        bob.lookup(&added.r_hash).unwrap_err().code(),
        RpcStatusCode::NOT_FOUND
    );
}
