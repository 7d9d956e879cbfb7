//! # ilp-plugin-lightning
//!
//! An Interledger (ILPv4) plugin that exchanges packets with its peers over BTP (WebSockets) and
//! settles with them over the Lightning Network through an LND node. Blocking and thread-based:
//! no async runtime.
//!
//! A server-role plugin (one account per authenticated client) that fulfils what it is sent,
//! and a client-role plugin that connects to it over BTP and sends it one Prepare:
//!
//! ```
//! use ilp_plugin_lightning::ilp::{condition_of, Address, Fulfill, FulfillBuilder, PrepareBuilder, Timestamp};
//! use ilp_plugin_lightning::plugin::LightningPlugin;
//!
//! let fulfillment = [7u8; 32];
//!
//! // Port 0: any free port. A client may owe the server up to 1,000 before it must settle.
//! let server = LightningPlugin::server(
//!     "127.0.0.1:0".parse().unwrap(),
//!     Address::new("example.server").unwrap(),
//! )
//! .credit_limit(Some(1_000))
//! .build()
//! .unwrap();
//! server
//!     .register_data_handler(move |_prepare: &[u8]| {
//!         Ok(FulfillBuilder { fulfillment: &fulfillment, data: b"thanks" }
//!             .build()
//!             .unwrap()
//!             .to_bytes())
//!     })
//!     .unwrap();
//! server.connect().unwrap();
//!
//! // The client authenticates as account `alice`; IL-DCP tells it its address.
//! let url = format!("btp+ws://alice:secret@{}", server.local_addr().unwrap());
//! let client = LightningPlugin::client(&url).build().unwrap();
//! client.connect().unwrap();
//! assert_eq!(client.own_address().unwrap().as_str(), "example.server.alice");
//!
//! let prepare = PrepareBuilder {
//!     amount: 100,
//!     expires_at: Timestamp::now().add_millis(30_000),
//!     execution_condition: &condition_of(&fulfillment),
//!     destination: "example.server",
//!     data: b"hello",
//! }
//! .build()
//! .unwrap()
//! .to_bytes();
//! let reply = client.send_data(&prepare).unwrap();
//! let fulfill = Fulfill::parse(&reply).unwrap();
//! assert_eq!(fulfill.fulfillment(), &fulfillment);
//! assert_eq!(fulfill.data(), b"thanks");
//! assert_eq!(server.balances().unwrap().balance("alice").receivable, 100);
//!
//! client.disconnect();
//! server.disconnect();
//! ```
//!
//! ## Modules
//!
//! Imports run downward in this list: a module uses only those below it.
//!
//! - [`plugin`]: [`LightningPlugin`](plugin::LightningPlugin), client or server role; wires the
//!   transport, the packet checks and the settlement hooks together.
//! - [`settlement`]: the [`SettlementHooks`](settlement::SettlementHooks) seam the plugin calls
//!   for every packet and connection, and [`Balances`](settlement::Balances), the default
//!   credit-limit book-keeping.
//! - [`btp`]: BTP (RFC 23): the pure packet codec, and the WebSocket transport (client, server,
//!   authentication, handler pool).
//! - [`lnd`]: the [`Lightning`](lnd::Lightning) trait, its LND gRPC client
//!   ([`lnd::grpc`]), and (feature `sim`) a simulated Lightning network serving LND's API.
//! - [`ilp`]: ILPv4 packets, addresses, error codes, OER and IL-DCP: a pure codec.
//! - [`encoding`]: base64 and base64url, shared by `btp` (account names) and `lnd` (key material).
//!
//! ## Threads
//!
//! Every thread is named and joined when its owner stops (`disconnect()`, `shutdown()` or drop).
//! Each BTP connection has a reading thread (`btp-reader-<peer>` on a client, `btp-conn-<id>`
//! on a server, which also runs the handshake and auth) and, once the peer sends requests, a
//! partner (`btp-turn-<peer>`): the two take turns reading, and the one that reads a request runs
//! its handler while the other reads on, so someone always reads and a handler that waits for
//! the same peer cannot deadlock. When both are busy, requests go to a fixed pool of handler
//! threads (`btp-client-handler-<i>` or `btp-server-handler-<i>`;
//! [`PluginBuilder::handler_threads`](plugin::PluginBuilder::handler_threads) of them). Data
//! handlers and the per-packet settlement hooks run on those threads. A client also has
//! `btp-client`, which connects and reconnects with backoff; a server has `btp-accept` and
//! `btp-reaper`. The plugin reports connects and disconnects (to the settlement hooks and the
//! [`on_event`](plugin::PluginBuilder::on_event) handler) from `plugin-client-events` or
//! `plugin-server-events`. Calls such as `send_data` block the calling thread until the answer
//! comes or the request times out. Locks are held briefly, never around a call into user code.
//!
//! The LND client's gRPC completion-queue threads (`lnd-grpc-<i>`) are grpcio's: they stop once
//! the [`GrpcLightning`](lnd::grpc::GrpcLightning) and the streams opened through it are dropped,
//! but grpcio does not hand out their join handles.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod btp;
pub mod encoding;
pub mod ilp;
pub mod lnd;
pub mod plugin;
pub mod settlement;
