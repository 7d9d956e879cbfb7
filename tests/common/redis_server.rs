//! A redis-server of a test's own: on a free loopback port, its append-only file in a scratch
//! folder (`appendonly yes`, `appendfsync always`, no snapshots), stopped by its process id.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running redis-server; killed (by pid) when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl RedisServer {
    /// Starts redis-server with its files in a new scratch folder named after `name`.
    pub fn start(name: &str) -> RedisServer {
        let dir = std::env::temp_dir().join(format!(
            "ilp-redis-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("redis scratch folder");
        Self::start_in(&dir)
    }

    /// Starts redis-server on the files in `dir` (those of an earlier server: it loads its
    /// append-only file), on a new free port.
    pub fn start_in(dir: &Path) -> RedisServer {
        Self::start_on(dir, free_port())
    }

    /// SIGKILLs the server and starts a new one on the same port and files: it loads the
    /// append-only file, so what was acknowledged is back.
    pub fn restart(&mut self) {
        self.kill();
        let (dir, port) = (self.dir.clone(), self.port);
        *self = Self::start_on(&dir, port);
    }

    fn start_on(dir: &Path, port: u16) -> RedisServer {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "always"])
            .args(["--dir", dir.to_str().expect("utf-8 path")])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        // Redis logs "Ready to accept connections" once it loaded its files and listens: the
        // event to wait for. Its further output is drained so that it never blocks on a pipe.
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut line = String::new();
        loop {
            line.clear();
            let read = out.read_line(&mut line).expect("redis-server output");
            assert!(
                read > 0,
                "redis-server on port {port} exited before it was ready"
            );
            if line.contains("Ready to accept connections") {
                break;
            }
            assert!(Instant::now() < deadline, "redis-server not ready in 60 s");
        }
        std::thread::Builder::new()
            .name("redis-out".into())
            .spawn(move || {
                let mut sink = Vec::new();
                let _ = out.read_to_end(&mut sink);
            })
            .expect("drain thread");
        RedisServer {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Its folder (the append-only file is in it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, and waits for the process to end.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One command over RESP (for what a test checks behind the store's back), its reply as
    /// raw text.
    pub fn command(&self, args: &[&str]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect redis");
        stream.set_nodelay(true).unwrap();
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        if let Some(len) = reply.strip_prefix('$') {
            let len: i64 = len.trim().parse().unwrap();
            if len >= 0 {
                let mut body = vec![0; len as usize + 2];
                reader.read_exact(&mut body).unwrap();
                return String::from_utf8_lossy(&body[..len as usize]).into_owned();
            }
        }
        reply.trim_end().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
