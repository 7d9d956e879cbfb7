//! Out of file descriptors, the server's accept thread waits (for a connection to end, or a
//! back-off up to a second) and says so once a second, instead of failing `accept` every 50 ms
//! with a log line each time; once a descriptor is free, the waiting client gets in. Alone in
//! its test binary: it lowers the process's descriptor limit.

use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use ilp_plugin_lightning::btp::{BtpServer, OwnedEntry, Packet, Reply, ServerConfig};
use parking_lot::Mutex;
use socket2::{Domain, Socket, Type};

/// Keeps every warning about `accept`.
struct Capture(Arc<Mutex<Vec<String>>>);

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        let line = record.args().to_string();
        if line.contains("BTP accept failed") {
            self.0.lock().push(line);
        }
    }
    fn flush(&self) {}
}

fn set_soft_descriptor_limit(limit: u64) -> u64 {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct they are given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut current), 0);
        let wanted = libc::rlimit {
            rlim_cur: limit,
            rlim_max: current.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &wanted), 0);
    }
    current.rlim_cur
}

fn highest_descriptor() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap()
}

#[test]
fn out_of_descriptors_the_accept_thread_waits_and_logs_once_a_second() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    log::set_boxed_logger(Box::new(Capture(lines.clone()))).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let handler =
        Arc::new(|_: &str, _: &Packet<'_>| Reply::Response(vec![OwnedEntry::ilp(vec![])]));
    let server = BtpServer::bind("127.0.0.1:0", ServerConfig::default(), handler).unwrap();
    let addr = server.local_addr();
    // The client's socket exists before the table fills up; connecting it takes no descriptor.
    let client = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let original = set_soft_descriptor_limit(highest_descriptor() + 1);
    // Fill whatever holes are left below the limit.
    let mut filler = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        filler.push(file);
    }
    client.connect(&addr.into()).unwrap();
    // The measurement: what the server does while it cannot accept, over this window.
    std::thread::sleep(Duration::from_millis(2500));
    let logged = lines.lock().len();
    // One descriptor frees up: the client gets in (its handshake completes) within the
    // back-off's second.
    drop(filler.pop());
    let stream: TcpStream = client.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let handshake = tungstenite::client(format!("ws://{addr}/"), stream);
    drop(filler);
    set_soft_descriptor_limit(original);
    assert!(
        (1..=4).contains(&logged),
        "{logged} log lines about accept in 2.5 s: {:?}",
        lines.lock()
    );
    assert!(handshake.is_ok(), "the waiting client never got in");
    drop(handshake);
    server.shutdown();
}
