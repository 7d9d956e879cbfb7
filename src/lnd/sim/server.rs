//! The gRPC face of a simulated node: LND's methods (`lnd::methods`) served by grpcio.
//!
//! Handlers run on grpcio's completion-queue threads. They check the macaroon, do their work
//! under the network lock (briefly), and hand the reply to a future spawned with `ctx.spawn`, as
//! grpcio does. Server streams are fed through unbounded channels by whoever produces the events
//! (an invoice settling, a payment finishing); a stream ends when its channel closes, or fails
//! when an error comes down it.

use std::sync::Arc;

use bitcoin::hashes::Hash;
use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use grpcio::{
    DuplexSink, RequestStream, RpcContext, RpcStatus, RpcStatusCode, ServerStreamingSink, Service,
    ServiceBuilder, UnarySink, WriteFlags,
};

use super::features::{self, KEYSEND_OPTIONAL, NODE_FEATURES};
use super::invoices::{InvoiceError, NewInvoice};
use super::network::{
    decode_regtest, go_hex_decode, PaymentIntent, Watcher, BLOCK_HEIGHT, COMMIT_WEIGHT,
    FEE_RATE_SAT_PER_KW,
};
use super::{FailureReason, Shared};
use crate::lnd::methods;
use crate::lnd::proto::{invoices, lightning, router};

/// LND's text when the macaroon does not verify (`macaroons/service.go`, from the bakery's
/// checker).
const BAD_MACAROON: &str = "verification failed: signature mismatch after caveat verification";

/// The service of node `node`: every LND method the simulator knows, as the node's LND version
/// offers them (an unregistered method is answered UNIMPLEMENTED, as grpc-go answers it).
pub(crate) fn lnd_service(shared: Arc<Shared>, node: usize) -> Service {
    let api = Api { shared, node };
    let builder = ServiceBuilder::new();
    let builder = {
        let api = api.clone();
        builder.add_unary_handler(&methods::GET_INFO, move |ctx, _request, sink| {
            api.unary(ctx, sink, || Ok(api.get_info()))
        })
    };
    let builder = {
        let api = api.clone();
        builder.add_unary_handler(&methods::ADD_INVOICE, move |ctx, request, sink| {
            api.unary(ctx, sink, || api.add_invoice(&request))
        })
    };
    let builder = {
        let api = api.clone();
        builder.add_unary_handler(&methods::LOOKUP_INVOICE, move |ctx, request, sink| {
            api.unary(ctx, sink, || api.lookup_invoice(&request))
        })
    };
    let builder = {
        let api = api.clone();
        builder.add_unary_handler(&methods::LIST_INVOICES, move |ctx, request, sink| {
            api.unary(ctx, sink, || Ok(api.list_invoices(&request)))
        })
    };
    let builder = {
        let api = api.clone();
        builder.add_server_streaming_handler(
            &methods::SUBSCRIBE_INVOICES,
            move |ctx, request, sink| api.subscribe_invoices(ctx, &request, sink),
        )
    };
    let builder = {
        let api = api.clone();
        builder.add_unary_handler(&methods::DECODE_PAY_REQ, move |ctx, request, sink| {
            api.unary(ctx, sink, || api.decode_pay_req(&request))
        })
    };
    let builder = if api.shared.serves_delete_canceled_invoice() {
        let api = api.clone();
        builder.add_unary_handler(
            &methods::DELETE_CANCELED_INVOICE,
            move |ctx, request, sink| {
                api.unary(ctx, sink, || api.delete_canceled_invoice(&request))
            },
        )
    } else {
        builder
    };
    let builder = {
        let api = api.clone();
        builder.add_unary_handler(&methods::CHANNEL_BALANCE, move |ctx, _request, sink| {
            api.unary(ctx, sink, || Ok(api.channel_balance()))
        })
    };
    let builder = {
        let api = api.clone();
        builder.add_unary_handler(&methods::LIST_CHANNELS, move |ctx, request, sink| {
            api.unary(ctx, sink, || Ok(api.list_channels(&request)))
        })
    };
    let builder = {
        let api = api.clone();
        builder
            .add_server_streaming_handler(&methods::SEND_PAYMENT_V2, move |ctx, request, sink| {
                api.send_payment(ctx, &request, sink)
            })
    };
    let builder = {
        let api = api.clone();
        builder
            .add_server_streaming_handler(&methods::TRACK_PAYMENT_V2, move |ctx, request, sink| {
                api.track_payment(ctx, &request, sink)
            })
    };
    let builder = {
        let api = api.clone();
        builder.add_unary_handler(&methods::CANCEL_INVOICE, move |ctx, request, sink| {
            api.unary(ctx, sink, || api.cancel_invoice(&request))
        })
    };
    let builder = if api.shared.serves_legacy_payments() {
        let stream_api = api.clone();
        let sync_api = api.clone();
        builder
            .add_duplex_streaming_handler(&methods::SEND_PAYMENT, move |ctx, requests, sink| {
                stream_api.send_payment_stream(ctx, requests, sink)
            })
            .add_unary_handler(&methods::SEND_PAYMENT_SYNC, move |ctx, request, sink| {
                sync_api.send_payment_sync(ctx, &request, sink)
            })
    } else {
        builder
    };
    builder.build()
}

fn unknown(message: impl Into<String>) -> RpcStatus {
    RpcStatus::with_message(RpcStatusCode::UNKNOWN, message.into())
}

fn invoice_error(error: InvoiceError) -> RpcStatus {
    let code = match error {
        InvoiceError::NotFound => RpcStatusCode::NOT_FOUND,
        _ => RpcStatusCode::UNKNOWN,
    };
    RpcStatus::with_message(code, error.to_string())
}

/// `lntypes.MakeHash`, as TrackPaymentV2 and CancelInvoice read their hash.
fn make_hash(bytes: &[u8]) -> Result<[u8; 32], RpcStatus> {
    <[u8; 32]>::try_from(bytes)
        .map_err(|_| unknown(format!("invalid hash length of {}, want 32", bytes.len())))
}

/// The status of a stream broken on purpose (a fault): what a client sees when the connection
/// to its node drops.
fn broken_stream(what: &str) -> RpcStatus {
    RpcStatus::with_message(
        RpcStatusCode::UNAVAILABLE,
        format!("the {what} stream was broken by the simulator (a fault set on purpose)"),
    )
}

/// Sends one unary reply.
async fn reply<T>(sink: UnarySink<T>, result: Result<T, RpcStatus>) {
    let _ = match result {
        Ok(response) => sink.success(response).await,
        Err(status) => sink.fail(status).await,
    };
}

/// Forwards a channel into a server stream until the channel closes (then ends the call with
/// OK), an error comes down it (then fails the call with it), or the client goes away.
async fn forward<T>(
    mut sink: ServerStreamingSink<T>,
    mut receiver: mpsc::UnboundedReceiver<Result<T, RpcStatus>>,
) {
    while let Some(item) = receiver.next().await {
        match item {
            Ok(item) => {
                if sink.send((item, WriteFlags::default())).await.is_err() {
                    return;
                }
            }
            Err(status) => {
                let _ = sink.fail(status).await;
                return;
            }
        }
    }
    let _ = sink.close().await;
}

/// Ends a server stream at once with an error status.
async fn fail_stream<T>(sink: ServerStreamingSink<T>, status: RpcStatus) {
    let _ = sink.fail(status).await;
}

#[derive(Clone)]
struct Api {
    shared: Arc<Shared>,
    node: usize,
}

impl Api {
    /// LND's checks before any call: the wallet unlocked, then the macaroon, with LND's texts
    /// and status code (`rpcperms/interceptor.go` →
    /// `macaroons/service.go` `ValidateMacaroon`: plain Go errors, so UNKNOWN): exactly one
    /// `macaroon` header ("expected 1 macaroon, got 0"), hex (either case; Go's decoding
    /// errors), and this node's macaroon ("verification failed: signature mismatch after
    /// caveat verification").
    fn authenticate(&self, ctx: &RpcContext<'_>) -> Result<(), RpcStatus> {
        let method = String::from_utf8_lossy(ctx.method()).into_owned();
        *self.shared.calls[self.node]
            .lock()
            .entry(method)
            .or_insert(0) += 1;
        // LND checks its state before the macaroon (`rpcperms/interceptor.go` `checkRPCState`).
        if self.shared.wallet_locked[self.node].load(std::sync::atomic::Ordering::SeqCst) {
            return Err(unknown(
                "wallet locked, unlock it to enable full RPC access",
            ));
        }
        let values: Vec<&[u8]> = ctx
            .request_headers()
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case("macaroon"))
            .map(|(_, value)| value)
            .collect();
        let [value] = values.as_slice() else {
            return Err(unknown(format!(
                "expected 1 macaroon, got {}",
                values.len()
            )));
        };
        let text = String::from_utf8_lossy(value);
        let decoded = go_hex_decode(&text).map_err(unknown)?;
        if decoded == self.shared.macaroons[self.node] {
            Ok(())
        } else {
            Err(unknown(BAD_MACAROON))
        }
    }

    /// Runs a unary call: authenticate, handle, reply (after the node's latency, if any).
    fn unary<T: Send + 'static>(
        &self,
        ctx: RpcContext<'_>,
        sink: UnarySink<T>,
        handle: impl FnOnce() -> Result<T, RpcStatus>,
    ) {
        let result = self.authenticate(&ctx).and_then(|()| handle());
        self.reply_later(ctx, sink, async move { result });
    }

    /// Replies with what `result` gives, after the node's latency.
    fn reply_later<T: Send + 'static>(
        &self,
        ctx: RpcContext<'_>,
        sink: UnarySink<T>,
        result: impl std::future::Future<Output = Result<T, RpcStatus>> + Send + 'static,
    ) {
        let latency = self.shared.latency(self.node);
        if latency.is_zero() {
            ctx.spawn(async move { reply(sink, result.await).await });
        } else {
            let (wake, woken) = oneshot::channel::<()>();
            self.shared.timer.run_after(latency, move || {
                let _ = wake.send(());
            });
            ctx.spawn(async move {
                // Dropped unsent (network shutting down): the call is cancelled with the sink.
                if woken.await.is_ok() {
                    reply(sink, result.await).await;
                }
            });
        }
    }

    fn get_info(&self) -> lightning::GetInfoResponse {
        let identity = &self.shared.identities[self.node];
        let ledger = self.shared.ledger.lock();
        let channel_count = ledger.adjacency[self.node].len();
        let accept_keysend = ledger.nodes[self.node].accept_keysend;
        let mut peers: Vec<usize> = ledger.adjacency[self.node]
            .iter()
            .map(|&index| {
                let channel = &ledger.channels[index];
                channel.nodes[1 - channel.side(self.node)]
            })
            .collect();
        drop(ledger);
        peers.sort_unstable();
        peers.dedup();
        let mut response = lightning::GetInfoResponse::new();
        response.version = self.shared.version.clone();
        response.commit_hash = "sim".to_string();
        response.identity_pubkey = identity.pubkey_hex.clone();
        response.alias = identity.alias.clone();
        response.color = "#3399ff".to_string();
        response.num_active_channels = channel_count as u32;
        response.num_peers = peers.len() as u32;
        response.block_height = BLOCK_HEIGHT;
        response.block_hash = format!("{:064x}", BLOCK_HEIGHT);
        response.best_header_timestamp = self.shared.now();
        response.synced_to_chain = true;
        response.synced_to_graph = true;
        // A field of LND 0.21 on.
        response.wallet_synced = self.shared.minor >= 21;
        let mut chain = lightning::Chain::new();
        chain.chain = "bitcoin".to_string();
        chain.network = "regtest".to_string();
        response.chains.push(chain);
        // The node announcement's features; keysend only with --accept-keysend (`server.go`:
        // `NoKeysend: !cfg.AcceptKeySend`).
        let keysend = accept_keysend.then_some(KEYSEND_OPTIONAL);
        response.features = features::feature_map(NODE_FEATURES.into_iter().chain(keysend));
        response
    }

    fn add_invoice(
        &self,
        request: &lightning::Invoice,
    ) -> Result<lightning::AddInvoiceResponse, RpcStatus> {
        let new_invoice =
            NewInvoice::from_request(request, self.shared.min_cltv_delta()).map_err(unknown)?;
        let identity = &self.shared.identities[self.node];
        // Signing takes a while: outside the lock.
        let record = new_invoice
            .sign(&self.shared.secp, &identity.secret_key, self.shared.now())
            .map_err(unknown)?;
        let mut response = lightning::AddInvoiceResponse::new();
        response.r_hash = record.hash.to_vec();
        response.payment_request = record.payment_request.clone();
        response.payment_addr = record.payment_addr.to_vec();
        let now = self.shared.now();
        let mut ledger = self.shared.ledger.lock();
        response.add_index = ledger
            .invoices(self.node, now)
            .insert(record)
            .map_err(invoice_error)?;
        Ok(response)
    }

    /// LookupInvoice (`rpcserver.go`): the hash from `r_hash_str` (hex) or `r_hash`, of 32
    /// bytes or none; NOT_FOUND when unknown.
    fn lookup_invoice(
        &self,
        request: &lightning::PaymentHash,
    ) -> Result<lightning::Invoice, RpcStatus> {
        let bytes = if request.r_hash_str.is_empty() {
            request.r_hash.clone()
        } else {
            go_hex_decode(&request.r_hash_str).map_err(unknown)?
        };
        if !bytes.is_empty() && bytes.len() != 32 {
            return Err(unknown(format!(
                "payment hash must be exactly 32 bytes, is instead {}",
                bytes.len()
            )));
        }
        let mut hash = [0u8; 32];
        hash[..bytes.len()].copy_from_slice(&bytes);
        let now = self.shared.now();
        let mut ledger = self.shared.ledger.lock();
        ledger
            .invoices(self.node, now)
            .get(&hash)
            .map(|invoice| invoice.to_proto())
            .ok_or_else(|| invoice_error(InvoiceError::NotFound))
    }

    fn list_invoices(
        &self,
        request: &lightning::ListInvoiceRequest,
    ) -> lightning::ListInvoiceResponse {
        let now = self.shared.now();
        let mut ledger = self.shared.ledger.lock();
        ledger.invoices(self.node, now).list(request)
    }

    fn subscribe_invoices(
        &self,
        ctx: RpcContext<'_>,
        request: &lightning::InvoiceSubscription,
        sink: ServerStreamingSink<lightning::Invoice>,
    ) {
        if let Err(status) = self.authenticate(&ctx) {
            return ctx.spawn(fail_stream(sink, status));
        }
        let (sender, receiver) = mpsc::unbounded();
        {
            let now = self.shared.now();
            let mut ledger = self.shared.ledger.lock();
            ledger.invoices(self.node, now).subscribe(
                request.add_index,
                request.settle_index,
                sender,
            );
        }
        ctx.spawn(forward(sink, receiver));
    }

    fn decode_pay_req(
        &self,
        request: &lightning::PayReqString,
    ) -> Result<lightning::PayReq, RpcStatus> {
        let invoice = decode_regtest(&request.pay_req).map_err(unknown)?;
        let mut response = lightning::PayReq::new();
        response.destination = hex::encode(invoice.recover_payee_pub_key().serialize());
        response.payment_hash = hex::encode(invoice.payment_hash().to_byte_array());
        let amount_msat = invoice.amount_milli_satoshis().unwrap_or(0);
        response.num_satoshis = (amount_msat / 1000) as i64;
        response.num_msat = amount_msat as i64;
        response.timestamp = invoice.duration_since_epoch().as_secs() as i64;
        response.expiry = invoice.expiry_time().as_secs() as i64;
        match invoice.description() {
            lightning_invoice::Bolt11InvoiceDescriptionRef::Direct(description) => {
                response.description = description.as_inner().0.clone();
            }
            lightning_invoice::Bolt11InvoiceDescriptionRef::Hash(hash) => {
                response.description_hash = hex::encode(hash.0.to_byte_array());
            }
        }
        response.cltv_expiry = invoice.min_final_cltv_expiry_delta() as i64;
        response.payment_addr = invoice.payment_secret().0.to_vec();
        let bits = invoice
            .features()
            .map(|features| features::bits_of(features.le_flags()))
            .unwrap_or_default();
        response.features = features::feature_map(bits);
        Ok(response)
    }

    fn delete_canceled_invoice(
        &self,
        request: &lightning::DelCanceledInvoiceReq,
    ) -> Result<lightning::DelCanceledInvoiceResp, RpcStatus> {
        if request.invoice_hash.is_empty() {
            return Err(unknown("invoice hash must be provided"));
        }
        let bytes = hex::decode(&request.invoice_hash)
            .map_err(|error| unknown(format!("invalid invoice hash: {error}")))?;
        let hash = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            unknown(format!(
                "invalid invoice hash: invalid hash string length of {}, want 64",
                request.invoice_hash.len()
            ))
        })?;
        let now = self.shared.now();
        let mut ledger = self.shared.ledger.lock();
        ledger
            .invoices(self.node, now)
            .delete_canceled(&hash)
            .map_err(|error| unknown(error.to_string()))?;
        let mut response = lightning::DelCanceledInvoiceResp::new();
        response.status = format!(
            "canceled invoice deleted successfully: invoice hash {}",
            request.invoice_hash.to_lowercase()
        );
        Ok(response)
    }

    /// ChannelBalance as LND sums it (`rpcserver.go`): each channel's commitment balances,
    /// and its HTLCs in flight by direction — LND counts an HTLC coming in to the node as
    /// `unsettled_local_balance` and one going out as `unsettled_remote_balance`.
    fn channel_balance(&self) -> lightning::ChannelBalanceResponse {
        let mut local_msat = 0;
        let mut remote_msat = 0;
        let mut unsettled_local_msat = 0;
        let mut unsettled_remote_msat = 0;
        {
            let ledger = self.shared.ledger.lock();
            for &index in &ledger.adjacency[self.node] {
                let channel = &ledger.channels[index];
                let side = channel.side(self.node);
                local_msat += channel.balance_msat[side];
                remote_msat += channel.balance_msat[1 - side];
                unsettled_local_msat += channel.in_flight_from(1 - side);
                unsettled_remote_msat += channel.in_flight_from(side);
            }
        }
        let amount = |msat: u64| {
            let mut amount = lightning::Amount::new();
            amount.sat = msat / 1000;
            amount.msat = msat;
            amount
        };
        let mut response = lightning::ChannelBalanceResponse::new();
        response.balance = (local_msat / 1000) as i64;
        response.local_balance = Some(amount(local_msat)).into();
        response.remote_balance = Some(amount(remote_msat)).into();
        response.unsettled_local_balance = Some(amount(unsettled_local_msat)).into();
        response.unsettled_remote_balance = Some(amount(unsettled_remote_msat)).into();
        response.pending_open_local_balance = Some(amount(0)).into();
        response.pending_open_remote_balance = Some(amount(0)).into();
        response
    }

    fn list_channels(
        &self,
        request: &lightning::ListChannelsRequest,
    ) -> lightning::ListChannelsResponse {
        let mut response = lightning::ListChannelsResponse::new();
        if request.inactive_only || request.private_only {
            return response;
        }
        let ledger = self.shared.ledger.lock();
        for &index in &ledger.adjacency[self.node] {
            let channel = &ledger.channels[index];
            let side = channel.side(self.node);
            let remote = &self.shared.identities[channel.nodes[1 - side]];
            if !request.peer.is_empty() && request.peer != remote.pubkey.serialize() {
                continue;
            }
            let mut out = lightning::Channel::new();
            out.active = true;
            out.remote_pubkey = remote.pubkey_hex.clone();
            out.channel_point = format!("{:064x}:0", channel.chan_id);
            out.chan_id = channel.chan_id;
            out.capacity = channel.capacity_sat as i64;
            out.local_balance = (channel.balance_msat[side] / 1000) as i64;
            out.remote_balance = (channel.balance_msat[1 - side] / 1000) as i64;
            out.commit_fee = channel.commit_fee_sat() as i64;
            out.commit_weight = COMMIT_WEIGHT as i64;
            out.fee_per_kw = FEE_RATE_SAT_PER_KW as i64;
            out.unsettled_balance = (channel.in_flight_msat() / 1000) as i64;
            out.total_satoshis_sent = (channel.sent_msat[side] / 1000) as i64;
            out.total_satoshis_received = (channel.sent_msat[1 - side] / 1000) as i64;
            out.num_updates = channel.num_updates;
            out.csv_delay = 144;
            out.initiator = side == 0;
            out.chan_status_flags = "ChanStatusDefault".to_string();
            out.local_chan_reserve_sat = channel.reserve_sat() as i64;
            out.remote_chan_reserve_sat = channel.reserve_sat() as i64;
            out.static_remote_key = true;
            out.peer_alias = if request.peer_alias_lookup {
                remote.alias.clone()
            } else {
                String::new()
            };
            response.channels.push(out);
        }
        response
    }

    fn send_payment(
        &self,
        ctx: RpcContext<'_>,
        request: &router::SendPaymentRequest,
        sink: ServerStreamingSink<lightning::Payment>,
    ) {
        let now = self.shared.now();
        let intent = self.authenticate(&ctx).and_then(|()| {
            PaymentIntent::from_request(&self.shared.identities, self.node, request, now)
        });
        let intent = match intent {
            Ok(intent) => intent,
            Err(status) => return ctx.spawn(fail_stream(sink, status)),
        };
        let (sender, receiver) = mpsc::unbounded();
        let begun = {
            let mut ledger = self.shared.ledger.lock();
            let breaks = &mut ledger.nodes[self.node].stream_breaks.send;
            let broken = *breaks > 0;
            *breaks = breaks.saturating_sub(1);
            let watcher = if broken {
                Watcher::None
            } else {
                Watcher::Stream(sender.clone())
            };
            let begun = ledger.begin_payment(&intent, watcher, self.shared.now_ns());
            if begun.is_ok() && broken {
                // The payment is registered and goes on without its stream. (An update sent
                // just before the error would be lost anyway: a grpcio client reports a failed
                // call before the messages it has not read yet.)
                let _ = sender.unbounded_send(Err(broken_stream("payment")));
            }
            begun
        };
        drop(sender);
        if let Err(refusal) = begun {
            return ctx.spawn(fail_stream(sink, refusal.status()));
        }
        ctx.spawn(forward(sink, receiver));
        self.dispatch(intent);
    }

    /// Sends a payment the node has registered: at once, or after the node's latency (or, if
    /// the latency reaches the payment's timeout, fails it with TIMEOUT then).
    fn dispatch(&self, intent: PaymentIntent) {
        let latency = self.shared.latency(self.node);
        if latency.is_zero() {
            execute(&self.shared, &intent);
        } else if latency >= intent.timeout {
            let shared = self.shared.clone();
            self.shared.timer.run_after(intent.timeout, move || {
                let now_ns = shared.now_ns();
                let mut ledger = shared.ledger.lock();
                // A queued forced failure is for a payment that gets as far as routing.
                ledger.fail_payment(&intent, FailureReason::Timeout, now_ns);
            });
        } else {
            let shared = self.shared.clone();
            self.shared
                .timer
                .run_after(latency, move || execute(&shared, &intent));
        }
    }

    fn track_payment(
        &self,
        ctx: RpcContext<'_>,
        request: &router::TrackPaymentRequest,
        sink: ServerStreamingSink<lightning::Payment>,
    ) {
        let hash = self
            .authenticate(&ctx)
            .and_then(|()| make_hash(&request.payment_hash));
        let hash = match hash {
            Ok(hash) => hash,
            Err(status) => return ctx.spawn(fail_stream(sink, status)),
        };
        let (sender, receiver) = mpsc::unbounded();
        let tracked = {
            let mut ledger = self.shared.ledger.lock();
            let breaks = &mut ledger.nodes[self.node].stream_breaks.track;
            if *breaks > 0 {
                *breaks -= 1;
                ledger.check_payment_known(self.node, &hash).map(|()| {
                    let _ = sender.unbounded_send(Err(broken_stream("payment tracking")));
                })
            } else {
                ledger.track_payment(
                    self.node,
                    &hash,
                    request.no_inflight_updates,
                    sender.clone(),
                )
            }
        };
        drop(sender);
        match tracked {
            Ok(()) => ctx.spawn(forward(sink, receiver)),
            Err(status) => ctx.spawn(fail_stream(sink, status)),
        }
    }

    fn cancel_invoice(
        &self,
        request: &invoices::CancelInvoiceMsg,
    ) -> Result<invoices::CancelInvoiceResp, RpcStatus> {
        let hash = make_hash(&request.payment_hash)?;
        let now = self.shared.now();
        let mut ledger = self.shared.ledger.lock();
        ledger
            .invoices(self.node, now)
            .cancel(&hash)
            .map_err(|error| unknown(error.to_string()))?;
        Ok(invoices::CancelInvoiceResp::new())
    }

    /// Checks, registers and dispatches one SendPayment / SendPaymentSync request; its
    /// `SendResponse` goes to `responses` once final, or at once if refused (`rpcserver.go`
    /// 0.20 `sendPayment`: a refusal is a response with `payment_error`, not a gRPC error).
    fn dispatch_legacy(
        &self,
        intent: Result<PaymentIntent, (String, [u8; 32])>,
        responses: &mpsc::UnboundedSender<lightning::SendResponse>,
    ) {
        let refused = |message: &str, hash: [u8; 32]| {
            let mut response = lightning::SendResponse::new();
            response.payment_error = message.to_string();
            response.payment_hash = hash.to_vec();
            let _ = responses.unbounded_send(response);
        };
        let intent = match intent {
            Ok(intent) => intent,
            Err((message, hash)) => return refused(&message, hash),
        };
        let begun = self.shared.ledger.lock().begin_payment(
            &intent,
            Watcher::Legacy(responses.clone()),
            self.shared.now_ns(),
        );
        match begun {
            Ok(()) => self.dispatch(intent),
            Err(refusal) => refused(refusal.text(), intent.hash),
        }
    }

    /// `lnrpc.Lightning/SendPayment` (LND 0.20 and earlier): a `SendResponse` for every
    /// `SendRequest`, in the order payments end; the stream closes once the client has closed
    /// its side and every payment has been answered.
    fn send_payment_stream(
        &self,
        ctx: RpcContext<'_>,
        requests: RequestStream<lightning::SendRequest>,
        sink: DuplexSink<lightning::SendResponse>,
    ) {
        if let Err(status) = self.authenticate(&ctx) {
            return ctx.spawn(async move {
                let _ = sink.fail(status).await;
                drop(requests);
            });
        }
        let api = self.clone();
        let (responses, mut answers) = mpsc::unbounded::<lightning::SendResponse>();
        let reader = async move {
            let mut requests = requests;
            while let Some(Ok(request)) = requests.next().await {
                let intent = PaymentIntent::from_send_request(
                    &api.shared.identities,
                    api.node,
                    &request,
                    api.shared.now(),
                );
                api.dispatch_legacy(intent, &responses);
            }
        };
        let writer = async move {
            let mut sink = sink;
            while let Some(answer) = answers.next().await {
                if sink.send((answer, WriteFlags::default())).await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        };
        ctx.spawn(async move {
            futures::future::join(reader, writer).await;
        });
    }

    /// `lnrpc.Lightning/SendPaymentSync` (LND 0.20 and earlier): one payment, answered once
    /// final; a malformed request is a gRPC error (UNKNOWN), a refused or failed payment an OK
    /// answer with `payment_error`.
    fn send_payment_sync(
        &self,
        ctx: RpcContext<'_>,
        request: &lightning::SendRequest,
        sink: UnarySink<lightning::SendResponse>,
    ) {
        if let Err(status) = self.authenticate(&ctx) {
            return ctx.spawn(reply(sink, Err(status)));
        }
        let intent = PaymentIntent::from_send_request(
            &self.shared.identities,
            self.node,
            request,
            self.shared.now(),
        );
        if let Err((message, _)) = &intent {
            return ctx.spawn(reply(sink, Err(unknown(message.clone()))));
        }
        let (responses, mut answers) = mpsc::unbounded();
        self.dispatch_legacy(intent, &responses);
        drop(responses);
        ctx.spawn(async move {
            let answer = answers.next().await.ok_or_else(|| {
                RpcStatus::with_message(
                    RpcStatusCode::UNAVAILABLE,
                    "the node went away before the payment was final".to_string(),
                )
            });
            reply(sink, answer).await;
        });
    }
}

/// Routes a payment under the network lock; wakes whoever waits for held payments.
fn execute(shared: &Shared, intent: &PaymentIntent) {
    let (now, now_ns) = (shared.now(), shared.now_ns());
    let held = {
        let mut ledger = shared.ledger.lock();
        ledger.execute_payment(&shared.identities, intent, now, now_ns)
    };
    if held {
        shared.held_changed.notify_all();
    }
}
