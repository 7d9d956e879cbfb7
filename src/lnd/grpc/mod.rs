//! [`Lightning`] over LND's gRPC API with grpcio: TLS with the node's own certificate as the
//! only root, the macaroon (hex) in the `macaroon` metadata of every call, a deadline on every
//! unary call, and payments through routerrpc's SendPaymentV2/TrackPaymentV2 (the only payment
//! calls left in LND 0.21).
//!
//! One `GrpcLightning` holds one gRPC channel, shared by all threads. The channel reconnects
//! by itself when the node restarts (calls fail with [`LndError::Unreachable`] meanwhile); an
//! invoice subscription does not survive it: it ends with an error, and the caller subscribes
//! again from [`InvoiceSubscription::cursor`] to receive what it missed, for example:
//!
//! ```no_run
//! # use ilp_plugin_lightning::lnd::{Lightning, InvoiceCursor, grpc::GrpcLightning};
//! # fn run(node: &GrpcLightning) {
//! let mut from = InvoiceCursor::default();
//! loop {
//!     let mut subscription = match node.subscribe_invoices(from) {
//!         Ok(s) => s,
//!         Err(_) => { std::thread::sleep(std::time::Duration::from_secs(1)); continue; }
//!     };
//!     for event in &mut subscription {
//!         match event {
//!             Ok(invoice) => println!("{} is {:?}", invoice.payment_hash, invoice.state),
//!             Err(e) => eprintln!("invoice stream broke: {e}"),
//!         }
//!     }
//!     from = subscription.cursor();
//! #   break;
//! }
//! # }
//! ```

// Public only for the fuzz targets (tests/fuzz), which feed it arbitrary LND answers.
#[doc(hidden)]
pub mod convert;
pub mod options;
mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longer timeouts than this mean none (see `call_option`).
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

use futures::future::{select, Either};
use futures::StreamExt;
use grpcio::{
    CallOption, Channel, ChannelBuilder, ChannelCredentialsBuilder, Client, ClientSStreamReceiver,
    EnvBuilder, Environment, MetadataBuilder,
};

use self::options::{LndOptions, MacaroonHex, Material};
use super::methods;
use super::proto::{invoices, lightning, router};
use super::{
    AddedInvoice, Invoice, InvoiceCursor, InvoiceEvents, InvoiceSubscription, Keysend, Lightning,
    LndError, NodeInfo, PaymentHash, PaymentLimits, PaymentOutcome, PaymentStatus,
    SubscriptionCanceller,
};

/// A connection to one LND node (or simulated node) over gRPC.
///
/// Cheap to share between threads (`Arc<GrpcLightning>` or `&GrpcLightning`); every method
/// blocks the calling thread only.
pub struct GrpcLightning {
    client: Client,
    channel: Channel,
    macaroon: MacaroonHex,
    call_timeout: Duration,
    target: String,
    // Kept so the completion-queue threads outlive every call made through `client`.
    _env: Arc<Environment>,
}

impl std::fmt::Debug for GrpcLightning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcLightning")
            .field("target", &self.target)
            .field("macaroon", &self.macaroon)
            .field("call_timeout", &self.call_timeout)
            .finish()
    }
}

/// A node's channel balances (ChannelBalance), in millisatoshi, as LND sums them over its open
/// channels' commitments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelBalance {
    /// Our side of the commitments: HTLCs in flight not included, the commitment fee of the
    /// channels we opened already taken off. Not all of it can be sent: each channel keeps a
    /// reserve (1% of its capacity by default), and its opener a fee buffer.
    pub local_msat: u64,
    /// The peers' side of the commitments.
    pub remote_msat: u64,
    /// HTLCs in flight *towards* us (LND's `unsettled_local_balance`: what becomes ours if they
    /// settle).
    pub unsettled_local_msat: u64,
    /// HTLCs in flight *from* us, our own payments not yet final among them (LND's
    /// `unsettled_remote_balance`).
    pub unsettled_remote_msat: u64,
}

/// Builds [`LndOptions`] step by step and connects.
#[derive(Clone, Debug)]
pub struct GrpcLightningBuilder {
    options: LndOptions,
}

impl GrpcLightningBuilder {
    /// The node's host name or IP (default `localhost`).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.options.host = host.into();
        self
    }

    /// The node's gRPC port (default 10009).
    pub fn port(mut self, port: u16) -> Self {
        self.options.port = port;
        self
    }

    /// The TLS certificate as PEM (or DER) bytes.
    pub fn tls_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.options.tls_cert = Material::Bytes(pem.into());
        self
    }

    /// The TLS certificate as base64 (of the PEM file, as the JavaScript plugin takes it).
    pub fn tls_cert_base64(mut self, base64: impl Into<String>) -> Self {
        self.options.tls_cert = Material::Base64(base64.into());
        self
    }

    /// The TLS certificate from a file (LND's `tls.cert`).
    pub fn tls_cert_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.options.tls_cert = Material::Path(path.into());
        self
    }

    /// The macaroon's binary bytes.
    pub fn macaroon(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.options.macaroon = Material::Bytes(bytes.into());
        self
    }

    /// The macaroon as base64.
    pub fn macaroon_base64(mut self, base64: impl Into<String>) -> Self {
        self.options.macaroon = Material::Base64(base64.into());
        self
    }

    /// The macaroon as hex.
    pub fn macaroon_hex(mut self, hex: impl Into<String>) -> Self {
        self.options.macaroon = Material::Hex(hex.into());
        self
    }

    /// The macaroon from a file (LND's `admin.macaroon` or a baked one).
    pub fn macaroon_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.options.macaroon = Material::Path(path.into());
        self
    }

    /// Deadline of every unary call (default 30 s).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.options.call_timeout = timeout;
        self
    }

    /// Longest pause between reconnection attempts (default 5 s).
    pub fn max_reconnect_backoff(mut self, backoff: Duration) -> Self {
        self.options.max_reconnect_backoff = backoff;
        self
    }

    /// HTTP/2 keepalive ping interval (default 60 s; see [`LndOptions::keepalive`]).
    pub fn keepalive(mut self, interval: Option<Duration>) -> Self {
        self.options.keepalive = interval;
        self
    }

    /// The options built so far.
    pub fn options(&self) -> &LndOptions {
        &self.options
    }

    /// Connects and checks the connection with a GetInfo call.
    pub fn connect(self) -> Result<GrpcLightning, LndError> {
        GrpcLightning::connect(self.options)
    }
}

impl GrpcLightning {
    /// A builder for `localhost:10009` with no certificate or macaroon yet.
    pub fn builder() -> GrpcLightningBuilder {
        GrpcLightningBuilder {
            options: LndOptions::new(
                "localhost",
                options::DEFAULT_PORT,
                Material::Bytes(Vec::new()),
                Material::Bytes(Vec::new()),
            ),
        }
    }

    /// Opens the channel and makes one GetInfo call, so that a wrong certificate, a wrong
    /// macaroon or an unreachable node is reported here rather than at the first payment.
    pub fn connect(options: LndOptions) -> Result<GrpcLightning, LndError> {
        options.validate()?;
        let target = options.target()?;
        let cert = options.load_tls_cert_pem()?;
        let macaroon = options.load_macaroon_hex()?;
        let env = Arc::new(
            EnvBuilder::new()
                .name_prefix("lnd-grpc")
                .cq_count(options.completion_queue_threads)
                .build(),
        );
        let credentials = ChannelCredentialsBuilder::new().root_cert(cert).build();
        let mut builder = ChannelBuilder::new(env.clone())
            .set_credentials(credentials)
            .max_receive_message_len(options.max_receive_message_len as i32)
            .max_reconnect_backoff(options.max_reconnect_backoff)
            .initial_reconnect_backoff(
                options
                    .max_reconnect_backoff
                    .min(Duration::from_millis(200)),
            );
        if let Some(interval) = options.keepalive {
            builder = builder
                .keepalive_time(interval)
                .keepalive_timeout(Duration::from_secs(20));
        }
        let channel = builder.connect(&target);
        let node = GrpcLightning {
            client: Client::new(channel.clone()),
            channel,
            macaroon,
            call_timeout: options.call_timeout,
            target,
            _env: env,
        };
        let info = node.fetch_node_info()?;
        log::info!(
            "connected to LND node {} ({}, {}) at {}",
            info.pubkey,
            info.network,
            info.version,
            node.target
        );
        Ok(node)
    }

    /// The `host:port` dialled.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Waits until the connection to the node is up (after the node restarted, the channel
    /// reconnects by itself with a backoff), at most `timeout`; false if it is not by then.
    /// Nothing is sent: the macaroon is only checked by the next call.
    pub fn wait_for_connection(&self, timeout: Duration) -> bool {
        futures::executor::block_on(self.channel.wait_for_connected(timeout))
    }

    /// The node's balances over all its channels (ChannelBalance), in millisatoshi.
    pub fn channel_balance(&self) -> Result<ChannelBalance, LndError> {
        let response = self.unary(
            &methods::CHANNEL_BALANCE,
            &lightning::ChannelBalanceRequest::new(),
            "ChannelBalance",
        )?;
        let msat = |amount: Option<&lightning::Amount>| amount.map_or(0, |a| a.msat);
        Ok(ChannelBalance {
            local_msat: msat(response.local_balance.as_ref()),
            remote_msat: msat(response.remote_balance.as_ref()),
            unsettled_local_msat: msat(response.unsettled_local_balance.as_ref()),
            unsettled_remote_msat: msat(response.unsettled_remote_balance.as_ref()),
        })
    }

    fn call_option(&self, timeout: Option<Duration>) -> Result<CallOption, LndError> {
        let mut metadata = MetadataBuilder::with_capacity(1);
        metadata
            .add_str("macaroon", self.macaroon.expose())
            .map_err(|e| status::from_grpc(e, "metadata"))?;
        let option = CallOption::default().headers(metadata.build());
        // gRPC takes a signed count of seconds: a caller's "forever" (`Duration::MAX`) would
        // wrap to a deadline already past. Past a century, no deadline at all.
        Ok(match timeout {
            Some(t) if t <= CENTURY => option.timeout(t),
            _ => option,
        })
    }

    fn unary<Req, Resp: Unpin>(
        &self,
        method: &grpcio::Method<Req, Resp>,
        request: &Req,
        name: &str,
    ) -> Result<Resp, LndError> {
        let option = self.call_option(Some(self.call_timeout))?;
        let started = Instant::now();
        let result = self
            .client
            .unary_call(method, request, option)
            .map_err(|e| status::from_grpc(e, name));
        match &result {
            Ok(_) => log::trace!("{name} ok in {:?}", started.elapsed()),
            Err(e) => log::debug!("{name} failed after {:?}: {e}", started.elapsed()),
        }
        result
    }

    fn fetch_node_info(&self) -> Result<NodeInfo, LndError> {
        let info = self.unary(
            &methods::GET_INFO,
            &lightning::GetInfoRequest::new(),
            "GetInfo",
        )?;
        convert::node_info(&info)
    }

    /// Runs SendPaymentV2 and reads updates until a final one. Every error from here on comes
    /// from the node or the transport after the request may have left: its outcome is unknown
    /// (`status::during_payment`).
    fn send_payment(
        &self,
        request: router::SendPaymentRequest,
        expected: &PaymentHash,
        limits: PaymentLimits,
    ) -> Result<PaymentOutcome, LndError> {
        // LND stops trying new routes after `timeout_seconds` but waits for HTLCs in flight;
        // our deadline adds the call timeout on top so the usual case ends with LND's verdict.
        let deadline = limits.timeout.saturating_add(self.call_timeout);
        let option = self.call_option(Some(deadline))?;
        let paying = |e| status::during_payment(status::from_grpc(e, "SendPaymentV2"));
        let stream = self
            .client
            .server_streaming(&methods::SEND_PAYMENT_V2, &request, option)
            .map_err(paying)?;
        for update in futures::executor::block_on_stream(stream) {
            let update = update.map_err(paying)?;
            let outcome = convert::payment(&update, Some(expected))?;
            if outcome.status != PaymentStatus::InFlight {
                log::debug!(
                    "payment {} final: {:?}",
                    outcome.payment_hash,
                    outcome.status
                );
                return Ok(outcome);
            }
        }
        Err(LndError::StreamEnded(format!(
            "SendPaymentV2 ended before payment {expected} was final; track it"
        )))
    }

    fn payment_request(limits: PaymentLimits) -> Result<router::SendPaymentRequest, LndError> {
        let mut request = router::SendPaymentRequest::new();
        request.fee_limit_msat = i64::try_from(limits.fee_limit_msat).map_err(|_| {
            LndError::InvalidRequest(format!(
                "fee limit {} msat is too large",
                limits.fee_limit_msat
            ))
        })?;
        // LND counts whole seconds and takes 0 as "60 s".
        let secs = limits.timeout.as_secs().max(1);
        request.timeout_seconds = i32::try_from(secs).map_err(|_| {
            LndError::InvalidRequest(format!("payment timeout {secs} s is too large"))
        })?;
        request.no_inflight_updates = true;
        Ok(request)
    }
}

fn amount(amount_msat: u64) -> Result<i64, LndError> {
    if amount_msat == 0 {
        return Err(LndError::InvalidRequest(
            "a payment needs an amount above 0 msat".into(),
        ));
    }
    i64::try_from(amount_msat)
        .map_err(|_| LndError::InvalidRequest(format!("amount {amount_msat} msat is too large")))
}

impl Lightning for GrpcLightning {
    fn node_info(&self) -> Result<NodeInfo, LndError> {
        self.fetch_node_info()
    }

    fn add_invoice(&self, expiry: Duration, memo: Option<&str>) -> Result<AddedInvoice, LndError> {
        let mut request = lightning::Invoice::new();
        request.memo = memo.unwrap_or_default().to_string();
        // LND takes whole seconds, and 0 as its default (24 h); never round a short expiry
        // down to that default.
        let secs = if expiry.is_zero() {
            0
        } else {
            expiry.as_secs().max(1)
        };
        request.expiry = i64::try_from(secs)
            .map_err(|_| LndError::InvalidRequest(format!("expiry {secs} s is too large")))?;
        let response = self.unary(&methods::ADD_INVOICE, &request, "AddInvoice")?;
        Ok(AddedInvoice {
            payment_hash: PaymentHash::from_slice(&response.r_hash, "AddInvoice r_hash")?,
            payment_request: response.payment_request,
            add_index: response.add_index,
        })
    }

    fn lookup_invoice(&self, payment_hash: &PaymentHash) -> Result<Invoice, LndError> {
        let mut request = lightning::PaymentHash::new();
        request.r_hash = payment_hash.0.to_vec();
        let response = self.unary(&methods::LOOKUP_INVOICE, &request, "LookupInvoice")?;
        convert::invoice(&response)
    }

    fn subscribe_invoices(&self, from: InvoiceCursor) -> Result<InvoiceSubscription, LndError> {
        let mut request = lightning::InvoiceSubscription::new();
        request.add_index = from.add_index;
        request.settle_index = from.settle_index;
        // No deadline: the stream lives until cancelled or broken.
        let option = self.call_option(None)?;
        let stream = self
            .client
            .server_streaming(&methods::SUBSCRIBE_INVOICES, &request, option)
            .map_err(|e| status::from_grpc(e, "SubscribeInvoices"))?;
        Ok(InvoiceSubscription::new(
            from,
            Box::new(GrpcInvoiceEvents {
                stream: Some(stream),
            }),
            SubscriptionCanceller::default(),
        ))
    }

    fn pay_invoice(
        &self,
        payment_request: &str,
        amount_msat: u64,
        limits: PaymentLimits,
    ) -> Result<PaymentOutcome, LndError> {
        let mut request = Self::payment_request(limits)?;
        let payment_request = payment_request.trim();
        // Read here first: a request that cannot be paid is refused before anything is sent,
        // and the hash every update must carry is known.
        let invoice: lightning_invoice::Bolt11Invoice = payment_request.parse().map_err(|e| {
            LndError::InvalidRequest(format!("not a BOLT11 invoice LND could pay: {e}"))
        })?;
        let hash = PaymentHash(bitcoin::hashes::Hash::to_byte_array(
            *invoice.payment_hash(),
        ));
        request.payment_request = payment_request.to_string();
        match invoice.amount_milli_satoshis().filter(|msat| *msat > 0) {
            None => request.amt_msat = amount(amount_msat)?,
            // LND refuses an amount beside the invoice's own.
            Some(asked) if asked == amount_msat => {}
            Some(asked) => {
                return Err(LndError::InvalidRequest(format!(
                    "the invoice asks for {asked} msat, not {amount_msat}"
                )))
            }
        }
        self.send_payment(request, &hash, limits)
    }

    fn keysend(
        &self,
        payment: &Keysend,
        limits: PaymentLimits,
    ) -> Result<PaymentOutcome, LndError> {
        let mut request = Self::payment_request(limits)?;
        request.dest = payment.destination().0.to_vec();
        request.amt_msat = amount(payment.amount_msat())?;
        let hash = payment.payment_hash();
        request.payment_hash = hash.0.to_vec();
        request.dest_custom_records = payment.dest_custom_records().into_iter().collect();
        // LND up to 0.18.2 needs to be told that the payee reads TLV onions when it is not in
        // the graph; later versions assume it.
        request
            .dest_features
            .push(lightning::FeatureBit::TLV_ONION_OPT.into());
        self.send_payment(request, &hash, limits)
    }

    fn track_payment(
        &self,
        payment_hash: &PaymentHash,
        wait: Duration,
    ) -> Result<PaymentOutcome, LndError> {
        let mut request = router::TrackPaymentRequest::new();
        request.payment_hash = payment_hash.0.to_vec();
        request.no_inflight_updates = false;
        let deadline = if wait.is_zero() {
            self.call_timeout
        } else {
            wait
        };
        let option = self.call_option(Some(deadline))?;
        let stream = self
            .client
            .server_streaming(&methods::TRACK_PAYMENT_V2, &request, option)
            .map_err(|e| status::from_grpc(e, "TrackPaymentV2"))?;
        let mut latest: Option<PaymentOutcome> = None;
        for update in futures::executor::block_on_stream(stream) {
            match update {
                Ok(update) => {
                    let outcome = convert::payment(&update, Some(payment_hash))?;
                    if outcome.status != PaymentStatus::InFlight || wait.is_zero() {
                        return Ok(outcome);
                    }
                    latest = Some(outcome);
                }
                Err(e) => {
                    let error = status::from_grpc(e, "TrackPaymentV2");
                    // Our own wait ran out while LND still reported the payment in flight.
                    return match (error, latest) {
                        (LndError::Timeout(_), Some(in_flight)) => Ok(in_flight),
                        // The wait was shorter than the node's first answer: ask for the
                        // current state with the ordinary call deadline.
                        (LndError::Timeout(_), None) if !wait.is_zero() => {
                            self.track_payment(payment_hash, Duration::ZERO)
                        }
                        (error, _) => Err(error),
                    };
                }
            }
        }
        latest
            .ok_or_else(|| LndError::StreamEnded("TrackPaymentV2 ended without any update".into()))
    }

    fn cancel_invoice(&self, payment_hash: &PaymentHash) -> Result<(), LndError> {
        let mut request = invoices::CancelInvoiceMsg::new();
        request.payment_hash = payment_hash.0.to_vec();
        self.unary(&methods::CANCEL_INVOICE, &request, "CancelInvoice")?;
        Ok(())
    }

    fn delete_canceled_invoice(&self, payment_hash: &PaymentHash) -> Result<(), LndError> {
        let mut request = lightning::DelCanceledInvoiceReq::new();
        request.invoice_hash = payment_hash.to_hex();
        match self.unary(
            &methods::DELETE_CANCELED_INVOICE,
            &request,
            "DeleteCanceledInvoice",
        ) {
            Ok(_) => Ok(()),
            Err(LndError::Unsupported(_)) => Err(LndError::Unsupported(
                "DeleteCanceledInvoice needs LND 0.20 or later".into(),
            )),
            Err(e) => Err(e),
        }
    }
}

/// SubscribeInvoices read on the caller's thread, waking up for a cancel from another one.
struct GrpcInvoiceEvents {
    stream: Option<ClientSStreamReceiver<lightning::Invoice>>,
}

impl InvoiceEvents for GrpcInvoiceEvents {
    fn next_event(&mut self, cancel: &SubscriptionCanceller) -> Option<Result<Invoice, LndError>> {
        let stream = self.stream.as_mut()?;
        let next = futures::executor::block_on(select(stream.next(), cancel.cancelled()));
        let result = match next {
            Either::Left((Some(Ok(invoice)), _)) => return Some(convert::invoice(&invoice)),
            Either::Left((Some(Err(e)), _)) => Some(Err(status::from_grpc(e, "SubscribeInvoices"))),
            Either::Left((None, _)) => Some(Err(LndError::StreamEnded(
                "the node closed the invoice stream".into(),
            ))),
            Either::Right(((), _)) => None,
        };
        if let Some(mut stream) = self.stream.take() {
            // Tells the node at once instead of when the channel goes away.
            stream.cancel();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_debug_hides_the_macaroon() {
        let secret = "0201036c6e6402f801030a10e1";
        let builder = GrpcLightning::builder()
            .host("127.0.0.1")
            .port(10010)
            .macaroon_hex(secret);
        let shown = format!("{builder:?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("10010"));
        let shown = format!("{:?}", builder.macaroon(hex::decode(secret).unwrap()));
        assert!(
            !shown.contains(secret) && !shown.contains("[2, 1, 3"),
            "{shown}"
        );
    }

    #[test]
    fn bad_settings_fail_before_any_network_call() {
        let err = GrpcLightning::builder()
            .tls_cert_path("/nonexistent/tls.cert")
            .macaroon_hex("0201")
            .connect()
            .unwrap_err();
        assert!(matches!(err, LndError::Config(ref m) if m.contains("/nonexistent/tls.cert")));
        let err = GrpcLightning::builder()
            .tls_cert("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
            .macaroon_base64("not base64!")
            .connect()
            .unwrap_err();
        assert!(
            matches!(err, LndError::Config(ref m) if m.contains("base64")),
            "{err}"
        );
    }

    #[test]
    fn payment_requests_carry_limits() {
        let request = GrpcLightning::payment_request(PaymentLimits {
            fee_limit_msat: 2_500,
            timeout: Duration::from_millis(1_500),
        })
        .unwrap();
        assert_eq!(request.fee_limit_msat, 2_500);
        assert_eq!(request.timeout_seconds, 1);
        assert!(request.no_inflight_updates);
        let too_big = GrpcLightning::payment_request(PaymentLimits {
            fee_limit_msat: u64::MAX,
            timeout: Duration::from_secs(1),
        });
        assert!(matches!(too_big, Err(LndError::InvalidRequest(_))));
        assert!(matches!(amount(0), Err(LndError::InvalidRequest(_))));
        assert_eq!(amount(1).unwrap(), 1);
    }
}
