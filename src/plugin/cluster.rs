//! Several hub processes serving one population of accounts through one Redis (cargo feature
//! `redis`): which process holds which account, and Prepares forwarded between processes.
//!
//! - The registry: `ilp:{acct:NAME}:at` names the process an account's client is attached to,
//!   with a time to live its holder refreshes; a process that dies drops out of it by itself.
//! - Forwarding: a Prepare for an account attached to another process is published on that
//!   process's channel (`ilp:hub:ID`) with the Prepare's origin (account, amount, hold) and
//!   answered on the sender's channel. The wait is bounded by the Prepare's expiry.
//! - Exactly one outcome per forwarded Prepare, decided in Redis by one script whichever side
//!   runs it first ([`RedisStore::claim_forward`], [`RedisStore::expire_forward`]): the
//!   receiving process, given a Fulfill, claims it — it stands if Redis's clock is not past the
//!   sender's deadline, and the sender's hold is posted in the same step; only then is the
//!   amount booked as owed to the receiver and the Fulfill published. The sending process,
//!   when its wait runs out, expires it — the hold is voided in the same step — unless the
//!   Fulfill was claimed first, which it then returns. A reply lost on the way, a sending
//!   process that died (its hold is posted by the claim, or voided by a sweeper), Redis gone
//!   for a while (both sides retry until the deadline; past it no claim succeeds): never money
//!   moved on one side only. What is left is the receiver's own risk, as with one process: a
//!   Fulfill that could not be claimed before the deadline is not owed to it.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;
use redis::io::tcp::TcpSettings;
use redis::{Client, Connection, IntoConnectionInfo, RedisResult};

use super::packets::{answering, reject, PrepareOrigin};
use super::{shorten_expiry, LightningPlugin, PluginError};
use crate::ilp::{ErrorCode, Packet, Prepare, Timestamp};
use crate::settlement::hooks::{Hold, HoldId, PrepareRefused, SettlementHooks};
use crate::settlement::store::{ForwardOutcome, RedisStore};

/// How often, at most, a thread blocked on Redis looks whether it should stop.
const POLL_STOP: Duration = Duration::from_millis(250);
/// How long one Redis command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Backoff between attempts to reach Redis again.
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// How long past its deadline the sending process keeps trying to decide a forwarded
/// Prepare's outcome before it answers R00 undecided: longer than the clocks of the processes
/// and Redis may differ, so that no claim can succeed once it answered.
const CLOCK_SKEW: Duration = Duration::from_millis(250);

/// The knobs of a process in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How long an account stays registered to this process unless refreshed (default 6 s;
    /// refreshed every third of it). A dead process's accounts are unreachable this long.
    pub registry_ttl: Duration,
    /// How much earlier than the forwarded Prepare the receiving process's own deadline is
    /// (default 500 ms): the time its answer has to travel back.
    pub relay_margin: Duration,
    /// Threads answering Prepares forwarded by other processes (default 16).
    pub relay_threads: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            registry_ttl: Duration::from_secs(6),
            relay_margin: Duration::from_millis(500),
            relay_threads: 16,
        }
    }
}

fn at_key(account: &str) -> String {
    format!("ilp:{{acct:{account}}}:at")
}

fn channel_of(process: &str) -> String {
    format!("ilp:hub:{process}")
}

fn outcome_key(process: &str, request: u64) -> String {
    format!("ilp:relay:{process}:{request}")
}

/// Deletes the registration only if it is still ours. KEYS: at. ARGV: our id.
const DETACH: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"#;

/// A Prepare forwarded from another process.
struct Forwarded {
    request: u64,
    from: String,
    origin: PrepareOrigin,
    prepare: Vec<u8>,
}

/// What travels on a process's channel.
enum Message {
    Prepare(Forwarded),
    Reply { request: u64, reply: Vec<u8> },
}

fn encode_prepare(request: u64, from: &str, origin: &PrepareOrigin, prepare: &[u8]) -> Vec<u8> {
    let account = origin.account.as_bytes();
    let mut out = Vec::with_capacity(64 + from.len() + account.len() + prepare.len());
    out.push(b'P');
    out.extend_from_slice(&request.to_be_bytes());
    out.push(u8::try_from(from.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&from.as_bytes()[..from.len().min(255)]);
    out.extend_from_slice(
        &u16::try_from(account.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&account[..account.len().min(usize::from(u16::MAX))]);
    out.extend_from_slice(&origin.amount.to_be_bytes());
    out.extend_from_slice(&origin.hold.id.0);
    out.extend_from_slice(&origin.hold.expires_at_ms.to_be_bytes());
    out.extend_from_slice(prepare);
    out
}

fn encode_reply(request: u64, reply: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + reply.len());
    out.push(b'R');
    out.extend_from_slice(&request.to_be_bytes());
    out.extend_from_slice(reply);
    out
}

/// Reads a message; `None` for anything malformed (it is dropped: its sender times out).
fn decode(bytes: &[u8]) -> Option<Message> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(head)
        }
        fn u64(&mut self) -> Option<u64> {
            Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
        }
    }
    let mut r = Reader(bytes);
    let kind = r.take(1)?[0];
    let request = r.u64()?;
    match kind {
        b'R' => Some(Message::Reply {
            request,
            reply: r.0.to_vec(),
        }),
        b'P' => {
            let from_len = usize::from(r.take(1)?[0]);
            let from = std::str::from_utf8(r.take(from_len)?).ok()?.to_owned();
            let account_len = usize::from(u16::from_be_bytes(r.take(2)?.try_into().ok()?));
            let account = std::str::from_utf8(r.take(account_len)?).ok()?.to_owned();
            let amount = r.u64()?;
            let id = HoldId(r.take(16)?.try_into().ok()?);
            let expires_at_ms = r.u64()?;
            Some(Message::Prepare(Forwarded {
                request,
                from,
                origin: PrepareOrigin {
                    account,
                    amount,
                    hold: Hold { id, expires_at_ms },
                },
                prepare: r.0.to_vec(),
            }))
        }
        _ => None,
    }
}

/// What the threads share.
struct Inner {
    id: String,
    client: Client,
    options: ClusterOptions,
    plugin: Weak<LightningPlugin>,
    /// The shared books, where forwarded Prepares' outcomes are decided.
    books: RedisStore,
    /// Connections not in use; a command takes one out, so no lock is held while Redis answers.
    idle: Mutex<Vec<Connection>>,
    /// Forwarded Prepares waiting for their answer, by request number.
    waiting: Mutex<HashMap<u64, Sender<Vec<u8>>>>,
    next_request: AtomicU64,
    stopped: Receiver<()>,
}

impl Inner {
    fn connect(&self) -> RedisResult<Connection> {
        let con = self.client.get_connection_with_timeout(COMMAND_TIMEOUT)?;
        con.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        con.set_write_timeout(Some(COMMAND_TIMEOUT))?;
        Ok(con)
    }

    /// Runs `f` on a connection; one that failed is dropped, with every idle one.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> RedisResult<T>) -> RedisResult<T> {
        let idle = self.idle.lock().pop();
        let mut con = match idle {
            Some(con) => con,
            None => self.connect()?,
        };
        let result = f(&mut con);
        match &result {
            Err(_) => {
                let stale = std::mem::take(&mut *self.idle.lock());
                drop((con, stale));
            }
            Ok(_) => self.idle.lock().push(con),
        }
        result
    }

    /// Waits up to `timeout` unless told to stop; `true` when stopping.
    fn wait_or_stop(&self, timeout: Duration) -> bool {
        !matches!(
            self.stopped.recv_timeout(timeout),
            Err(RecvTimeoutError::Timeout)
        )
    }

    fn own_address(&self) -> String {
        self.plugin
            .upgrade()
            .and_then(|p| p.own_address())
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default()
    }

    fn register(&self, accounts: &[String]) -> RedisResult<()> {
        if accounts.is_empty() {
            return Ok(());
        }
        let ttl = u64::try_from(self.options.registry_ttl.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        for account in accounts {
            pipe.cmd("SET")
                .arg(at_key(account))
                .arg(&self.id)
                .arg("PX")
                .arg(ttl)
                .ignore();
        }
        self.with(|con| pipe.query::<()>(con))
    }

    /// Forwards `prepare` for `account` if another process holds it: its answer, or `None`
    /// when no other process does (the caller answers as one process would).
    fn forward(&self, account: &str, prepare: &[u8]) -> Option<Vec<u8>> {
        let own = self.own_address();
        let holder: Option<String> = match self.with(|con| {
            redis::cmd("GET")
                .arg(at_key(account))
                .query::<Option<String>>(con)
        }) {
            Ok(holder) => holder,
            Err(e) => {
                return Some(reject(
                    ErrorCode::T01_PEER_UNREACHABLE,
                    &own,
                    &format!("cannot look up where {account} is attached: {e}"),
                    &[],
                ))
            }
        };
        let holder = holder.filter(|h| *h != self.id)?;
        let Some(origin) = answering() else {
            // Not the answer to an incoming Prepare (a local send_data): no hold to post.
            return Some(reject(
                ErrorCode::F02_UNREACHABLE,
                &own,
                &format!("{account} is attached to another hub process"),
                &[],
            ));
        };
        let expires_at_ms = Prepare::parse(prepare)
            .map(|p| p.expires_at().unix_millis())
            .unwrap_or(0);
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = bounded(1);
        self.waiting.lock().insert(request, answer);
        let message = encode_prepare(request, &self.id, &origin, prepare);
        let published = self.with(|con| {
            redis::cmd("PUBLISH")
                .arg(channel_of(&holder))
                .arg(message)
                .query::<u64>(con)
        });
        match published {
            Ok(receivers) if receivers > 0 => {}
            Ok(_) | Err(_) => {
                self.waiting.lock().remove(&request);
                return Some(reject(
                    ErrorCode::T01_PEER_UNREACHABLE,
                    &own,
                    &format!("the hub process holding {account} does not answer"),
                    &[],
                ));
            }
        }
        let left = expires_at_ms.saturating_sub(Timestamp::now().unix_millis());
        let deadline = Instant::now() + Duration::from_millis(u64::try_from(left).unwrap_or(0));
        let reply = answered.recv_deadline(deadline);
        self.waiting.lock().remove(&request);
        if let Ok(reply) = reply {
            return Some(reply);
        }
        // The wait ran out: decided now, unless the other side decided first.
        Some(self.expire(request, &origin, deadline, &own))
    }

    /// Decides a forwarded Prepare whose answer did not come as expired (voiding the
    /// sender's hold), unless the receiving process claimed its Fulfill first: the answer for
    /// the sender. Redis unreachable: tried again until the sender's own Prepare is about to
    /// expire, and never answered undecided before `deadline` and the clocks' skew passed.
    fn expire(
        &self,
        request: u64,
        origin: &PrepareOrigin,
        deadline: Instant,
        own: &str,
    ) -> Vec<u8> {
        let key = outcome_key(&self.id, request);
        let give_up_ms = origin.hold.expires_at_ms.saturating_sub(100);
        let mut backoff = Duration::from_millis(20);
        loop {
            match self
                .books
                .expire_forward(&key, &origin.account, &origin.hold.id)
            {
                Ok(ForwardOutcome::Fulfilled(fulfill)) => return fulfill,
                Ok(ForwardOutcome::Expired) => break,
                Err(e) => {
                    let now_ms = u64::try_from(Timestamp::now().unix_millis()).unwrap_or(0);
                    if now_ms >= give_up_ms && Instant::now() >= deadline + CLOCK_SKEW {
                        log::error!(
                            "cluster: cannot decide forwarded Prepare {request} of {} ({e}): \
                             answered R00; its hold is voided by a sweeper",
                            origin.account
                        );
                        break;
                    }
                    if self.wait_or_stop(backoff) {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
            }
        }
        reject(
            ErrorCode::R00_TRANSFER_TIMED_OUT,
            own,
            "no answer from the hub process holding the receiver",
            &[],
        )
    }

    /// Answers a Prepare forwarded to us: passes it to the account's client, decides the
    /// outcome of a Fulfill before booking it (see the module's doc), and sends the answer back.
    fn answer(&self, forwarded: Forwarded) {
        let Some(plugin) = self.plugin.upgrade() else {
            return;
        };
        let own = self.own_address();
        let reply = self.pass_on(&plugin, &forwarded, &own);
        let message = encode_reply(forwarded.request, &reply);
        if let Err(e) = self.with(|con| {
            redis::cmd("PUBLISH")
                .arg(channel_of(&forwarded.from))
                .arg(message)
                .query::<u64>(con)
        }) {
            // The sending process decides when its wait runs out.
            log::warn!("cluster: cannot send back the answer to a forwarded Prepare: {e}");
        }
    }

    fn pass_on(&self, plugin: &LightningPlugin, forwarded: &Forwarded, own: &str) -> Vec<u8> {
        let (Ok(parsed), Some(account)) = (
            Prepare::parse(&forwarded.prepare),
            plugin.attached_account(&forwarded.prepare),
        ) else {
            return reject(
                ErrorCode::F02_UNREACHABLE,
                own,
                "the receiver is not attached to this hub process",
                &[],
            );
        };
        let amount = parsed.amount();
        let deadline_ms = u64::try_from(parsed.expires_at().unix_millis()).unwrap_or(0);
        // Its amount is the receiver's already: the sending process converted it.
        let prepare = match shorten_expiry(&forwarded.prepare, None, self.options.relay_margin) {
            Ok(prepare) => prepare,
            Err(why) => return reject(ErrorCode::R02_INSUFFICIENT_TIMEOUT, own, &why, &[]),
        };
        // Booked below, once the outcome is decided.
        let hooks = &*plugin.core.hooks;
        let reply = match plugin.send_data_via(&prepare, &NoBooking) {
            Ok(reply) => reply,
            Err(e) => {
                hooks.on_outgoing_rejected(&account, amount, "T00");
                let code = match e {
                    PluginError::Transport(_) | PluginError::PeerError { .. } => {
                        ErrorCode::T01_PEER_UNREACHABLE
                    }
                    _ => ErrorCode::T00_INTERNAL_ERROR,
                };
                return reject(code, own, &format!("forwarding failed: {e}"), &[]);
            }
        };
        match Packet::parse(&reply) {
            Ok(Packet::Fulfill(_)) => {}
            Ok(Packet::Reject(r)) => {
                hooks.on_outgoing_rejected(&account, amount, r.code().as_str());
                return reply;
            }
            _ => {
                hooks.on_outgoing_rejected(&account, amount, "T00");
                return reply;
            }
        }
        let origin = &forwarded.origin;
        let key = outcome_key(&forwarded.from, forwarded.request);
        let mut backoff = Duration::from_millis(20);
        let outcome = loop {
            match self.books.claim_forward(
                &key,
                &reply,
                &origin.account,
                &origin.hold.id,
                deadline_ms,
            ) {
                Ok(outcome) => break Some(outcome),
                Err(e) => {
                    let now_ms = u64::try_from(Timestamp::now().unix_millis()).unwrap_or(0);
                    if now_ms > deadline_ms || self.wait_or_stop(backoff) {
                        log::error!(
                            "cluster: cannot claim the Fulfill of {}'s Prepare {} ({e}): not \
                             owed to {account}",
                            origin.account,
                            origin.hold.id
                        );
                        break None;
                    }
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
            }
        };
        match outcome {
            Some(ForwardOutcome::Fulfilled(fulfill)) if fulfill == reply => {
                hooks.on_outgoing_fulfilled(&account, amount);
                reply
            }
            Some(ForwardOutcome::Fulfilled(other)) => other,
            _ => {
                log::warn!(
                    "cluster: {account}'s Fulfill of {}'s Prepare {} came after the sender's \
                     deadline: not owed",
                    origin.account,
                    origin.hold.id
                );
                hooks.on_outgoing_rejected(&account, amount, "R00");
                reject(
                    ErrorCode::R00_TRANSFER_TIMED_OUT,
                    own,
                    "Packet expired",
                    &[],
                )
            }
        }
    }
}

/// Hooks that book nothing: a forwarded Prepare's outcome is booked once decided.
struct NoBooking;

impl SettlementHooks for NoBooking {
    fn on_incoming_prepare(&self, _: &str, _: u64, _: &Hold) -> Result<(), PrepareRefused> {
        Ok(())
    }
    fn on_incoming_rejected(&self, _: &str, _: u64, _: &Hold) {}
    fn on_outgoing_fulfilled(&self, _: &str, _: u64) {}
    fn on_outgoing_rejected(&self, _: &str, _: u64, _: &str) {}
}

/// This process's membership of a cluster of hub processes sharing one Redis: create it with
/// [`Cluster::join`] after the hub's plugin is built and routing
/// ([`route_between_clients`](super::route_between_clients)); it registers the accounts
/// attached here, forwards Prepares for accounts attached elsewhere, and answers those
/// forwarded here. Dropping it leaves the cluster and joins its threads.
pub struct Cluster {
    inner: Arc<Inner>,
    stop: Mutex<Option<Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

/// The hub's side of a cluster: what the plugin calls.
pub(crate) trait RemoteHubs: Send + Sync {
    /// The answer to `prepare` for `account` from the process it is attached to; `None` if
    /// none other is.
    fn forward(&self, account: &str, prepare: &[u8]) -> Option<Vec<u8>>;
    /// `account`'s client attached here.
    fn attached(&self, account: &str);
    /// `account`'s client left.
    fn detached(&self, account: &str);
}

impl RemoteHubs for Inner {
    fn forward(&self, account: &str, prepare: &[u8]) -> Option<Vec<u8>> {
        Inner::forward(self, account, prepare)
    }

    fn attached(&self, account: &str) {
        if let Err(e) = self.register(&[account.to_owned()]) {
            log::warn!("cluster: cannot register {account}: {e}");
        }
    }

    fn detached(&self, account: &str) {
        let detach = redis::Script::new(DETACH);
        if let Err(e) =
            self.with(|con| detach.key(at_key(account)).arg(&self.id).invoke::<i64>(con))
        {
            log::warn!("cluster: cannot unregister {account}: {e}");
        }
    }
}

impl Cluster {
    /// Joins the cluster of hub processes on the Redis at `url` with `plugin`, a server that
    /// routes between its clients.
    pub fn join(
        url: &str,
        plugin: &Arc<LightningPlugin>,
        options: ClusterOptions,
    ) -> Result<Cluster, String> {
        let info = url
            .into_connection_info()
            .map_err(|e| format!("{url}: {e}"))?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let client = Client::open(info).map_err(|e| format!("{url}: {e}"))?;
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id).map_err(|e| format!("no randomness: {e}"))?;
        let books = RedisStore::open(url).map_err(|e| e.to_string())?;
        let (stop, stopped) = bounded::<()>(0);
        let inner = Arc::new(Inner {
            id: hex::encode(id),
            client,
            options: options.clone(),
            plugin: Arc::downgrade(plugin),
            books,
            idle: Mutex::new(Vec::new()),
            waiting: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(0),
            stopped,
        });
        inner
            .with(|con| redis::cmd("PING").query::<String>(con))
            .map_err(|e| format!("{url}: {e}"))?;
        let cluster = Cluster {
            inner: inner.clone(),
            stop: Mutex::new(Some(stop)),
            threads: Mutex::new(Vec::new()),
        };
        let (work, jobs) = bounded::<Forwarded>(256);
        let spawn = |name: String, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(body)
                .map_err(|e| format!("cannot start a cluster thread: {e}"))
        };
        let mut threads = Vec::new();
        for i in 0..options.relay_threads.max(1) {
            let (inner, jobs) = (inner.clone(), jobs.clone());
            threads.push(spawn(
                format!("cluster-relay-{i}"),
                Box::new(move || {
                    for forwarded in jobs {
                        inner.answer(forwarded);
                    }
                }),
            )?);
        }
        let (subscribed, ready) = bounded::<()>(1);
        {
            let inner = inner.clone();
            threads.push(spawn(
                "cluster-inbox".into(),
                Box::new(move || inbox(&inner, &work, &subscribed)),
            )?);
        }
        {
            let inner = inner.clone();
            threads.push(spawn(
                "cluster-registry".into(),
                Box::new(move || registry(&inner)),
            )?);
        }
        *cluster.threads.lock() = threads;
        // Subscribed before any account is registered here: no Prepare is published to us
        // before we listen.
        if ready.recv_timeout(COMMAND_TIMEOUT).is_err() {
            return Err(format!("{url}: cannot subscribe to this process's channel"));
        }
        plugin.set_remote_hubs(Some(inner.clone() as Arc<dyn RemoteHubs>));
        if let Err(e) = inner.register(&plugin.connected_accounts()) {
            log::warn!("cluster: cannot register the accounts attached here: {e}");
        }
        log::info!("cluster: joined as process {}", inner.id);
        Ok(cluster)
    }

    /// This process's id in the cluster.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Leaves: stops forwarding and joins the threads.
    pub fn leave(&self) {
        if let Some(plugin) = self.inner.plugin.upgrade() {
            plugin.set_remote_hubs(None);
        }
        self.stop.lock().take();
        let threads = std::mem::take(&mut *self.threads.lock());
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Keeps the accounts attached here registered.
fn registry(inner: &Inner) {
    let every = inner.options.registry_ttl / 3;
    while !inner.wait_or_stop(every) {
        let Some(plugin) = inner.plugin.upgrade() else {
            return;
        };
        let accounts = plugin.connected_accounts();
        drop(plugin);
        if let Err(e) = inner.register(&accounts) {
            log::warn!("cluster: cannot refresh the registry: {e}");
        }
    }
}

/// Reads this process's channel, reconnecting when Redis goes away; Prepares go to the relay
/// threads (`work`), replies to whoever waits for them.
fn inbox(inner: &Inner, work: &Sender<Forwarded>, subscribed: &Sender<()>) {
    let channel = channel_of(&inner.id);
    let mut backoff = Duration::from_millis(50);
    loop {
        let connected = inner.connect().and_then(|con| {
            con.set_read_timeout(Some(POLL_STOP))?;
            Ok(con)
        });
        let mut con = match connected {
            Ok(con) => con,
            Err(e) => {
                log::warn!("cluster: cannot reach Redis for this process's channel: {e}");
                if inner.wait_or_stop(backoff) {
                    return;
                }
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        let mut pubsub = con.as_pubsub();
        if let Err(e) = pubsub.subscribe(&channel) {
            log::warn!("cluster: cannot subscribe to {channel}: {e}");
            if inner.wait_or_stop(backoff) {
                return;
            }
            continue;
        }
        backoff = Duration::from_millis(50);
        let _ = subscribed.try_send(());
        loop {
            match pubsub.get_message() {
                Ok(message) => match decode(message.get_payload_bytes()) {
                    Some(Message::Reply { request, reply }) => {
                        if let Some(waiter) = inner.waiting.lock().remove(&request) {
                            let _ = waiter.send(reply);
                        }
                    }
                    Some(Message::Prepare(forwarded)) => match work.try_send(forwarded) {
                        Ok(()) => {}
                        Err(TrySendError::Full(f) | TrySendError::Disconnected(f)) => {
                            // Too busy: the sender hears so at once rather than at expiry.
                            let busy = reject(
                                ErrorCode::T03_CONNECTOR_BUSY,
                                &inner.own_address(),
                                "hub process too busy to forward",
                                &[],
                            );
                            let message = encode_reply(f.request, &busy);
                            let _ = inner.with(|con| {
                                redis::cmd("PUBLISH")
                                    .arg(channel_of(&f.from))
                                    .arg(message)
                                    .query::<u64>(con)
                            });
                        }
                    },
                    None => log::warn!("cluster: dropped a malformed message on {channel}"),
                },
                Err(e) if e.is_timeout() => {
                    if inner.wait_or_stop(Duration::ZERO) {
                        return;
                    }
                }
                Err(e) => {
                    log::warn!("cluster: lost this process's channel ({e}); reconnecting");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_truncated_ones_are_refused() {
        let origin = PrepareOrigin {
            account: "alice".into(),
            amount: 42,
            hold: Hold::new(1_234),
        };
        let bytes = encode_prepare(7, "abc", &origin, b"prepare bytes");
        let Some(Message::Prepare(back)) = decode(&bytes) else {
            panic!("not a Prepare");
        };
        assert_eq!(
            (back.request, back.from.as_str(), back.prepare.as_slice()),
            (7, "abc", &b"prepare bytes"[..])
        );
        assert_eq!(
            (back.origin.account.as_str(), back.origin.amount),
            ("alice", 42)
        );
        assert_eq!(back.origin.hold, origin.hold);
        for cut in 0..bytes.len() - b"prepare bytes".len() {
            assert!(decode(&bytes[..cut]).is_none(), "{cut}");
        }
        let Some(Message::Reply { request, reply }) = decode(&encode_reply(9, b"r")) else {
            panic!("not a Reply");
        };
        assert_eq!((request, reply.as_slice()), (9, &b"r"[..]));
        assert!(decode(b"X00000000").is_none());
    }
}
