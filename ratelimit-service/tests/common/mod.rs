//! Test support shared by the tests: a throwaway `redis-server` (Debian's, a plain process on a
//! free port), service processes started from the built binary (`--port 0`, address read from
//! the readiness line), gRPC clients, and a raw read of a Limitador counter in Redis.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ai_ratelimit_service::kuadrant::KuadrantRlsClient;
use ai_ratelimit_service::rls::{descriptor, RateLimitRequest, RateLimitServiceClient};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tonic::transport::{Channel, Endpoint};

pub const DOMAIN: &str = "ai-proxy";

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ai-rls-test-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `redis-server --port P --bind 127.0.0.1 --save '' --appendonly no --dir DIR`.
pub struct Redis {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl Redis {
    pub async fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            dir: TempDir::new(),
            child: None,
        };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port, empty, and waits until it answers PING.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server not found: install Debian's redis-server (scripts/lib.sh ensure_redis)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = self.conn().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    pub async fn conn(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
    }

    /// The value of the Limitador counter whose limit has exactly this one condition (its key
    /// holds the limit as JSON: `"conditions":["<condition>"]`); `None` when it has none.
    pub async fn limitador_counter(&self, condition: &str) -> Option<i64> {
        let mut c = self.conn().await.expect("redis");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("namespace:{{{DOMAIN}}},counter:*"))
            .query_async(&mut c)
            .await
            .expect("KEYS");
        let needle = format!("\"conditions\":[\"{condition}\"]");
        let mut found = keys
            .into_iter()
            .filter(|k| k.contains(&needle) && !k.ends_with(",reservations"));
        let key = found.next()?;
        assert!(found.next().is_none(), "two counters for {condition}");
        redis::cmd("GET")
            .arg(&key)
            .query_async(&mut c)
            .await
            .expect("GET")
    }
}

/// One service process, killed on drop.
pub struct Service {
    pub addr: SocketAddr,
    child: Child,
    _stdout: BufReader<ChildStdout>,
    _dir: TempDir,
}

impl Service {
    /// Starts the binary with `--port 0 --limits <file with limits> [--redis URL] extra...`.
    pub async fn start(limits: &str, redis: Option<&Redis>, extra: &[&str]) -> Service {
        Service::start_url(limits, redis.map(Redis::url), extra).await
    }

    /// [`Service::start`] with a Redis URL.
    pub async fn start_url(limits: &str, redis_url: Option<String>, extra: &[&str]) -> Service {
        let dir = TempDir::new();
        let file = dir.path().join("limits.yaml");
        std::fs::write(&file, limits).expect("limits file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ai-ratelimit-service"));
        cmd.args(["--port", "0", "--limits"]).arg(&file).args(extra);
        if let Some(url) = redis_url {
            cmd.args(["--redis", &url]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the service");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut line))
            .await
            .expect("no readiness line within 30 s")
            .expect("read stdout");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .parse()
            .expect("an address");
        Service {
            addr,
            child,
            _stdout: stdout,
            _dir: dir,
        }
    }

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect")
    }

    pub async fn rls(&self) -> RateLimitServiceClient<Channel> {
        RateLimitServiceClient::new(self.channel().await)
    }

    pub async fn kuadrant(&self) -> KuadrantRlsClient {
        KuadrantRlsClient::new(self.channel().await)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A request for `domain` with these descriptors (entries in order) and `hits_addend`.
pub fn request(descriptors: &[&[(&str, &str)]], hits: u32) -> RateLimitRequest {
    RateLimitRequest {
        domain: DOMAIN.into(),
        descriptors: descriptors.iter().map(|d| descriptor(d)).collect(),
        hits_addend: hits,
    }
}

/// Waits for the next epoch-aligned window of `secs` when fewer than 3 s of it are left, so
/// that a short test's calls fall into one window.
pub async fn avoid_window_end(secs: u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let into = now % (secs * 1000);
    if into > secs * 1000 - 3000 {
        tokio::time::sleep(Duration::from_millis(secs * 1000 - into + 50)).await;
    }
}

/// Limitador's limit (one condition, no variables) as its limits file writes it.
pub fn limitador_limit(name: &str, max: u64, seconds: u64, condition: &str) -> String {
    format!(
        "- namespace: {DOMAIN}\n  name: {name:?}\n  max_value: {max}\n  seconds: {seconds}\n  \
         conditions: [{condition:?}]\n  variables: []\n"
    )
}

/// The condition that matches a request carrying exactly this descriptor.
pub fn exact(entries: &[(&str, &str)]) -> String {
    let inner: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("'{k}': '{v}'"))
        .collect();
    format!("{{{}}} in descriptors", inner.join(", "))
}
