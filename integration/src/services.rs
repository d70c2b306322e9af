//! The real services the fleet tests run as plain processes: Debian's `redis-server`, and
//! the test rate limit service built on the `limitador` crate (`ratelimit-service/`, binary
//! from `RLS_BIN`, which `scripts/lib.sh build_rls` exports); plus a listener that accepts
//! connections and never answers (a hung service).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

/// A directory for one service, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> anyhow::Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("ai-proxy-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free port on the loopback (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `redis-server` on a free port, empty, without persistence; killed on drop.
pub struct Redis {
    pub port: u16,
    child: Child,
    _dir: Scratch,
}

impl Redis {
    pub fn start() -> anyhow::Result<Redis> {
        let port = free_port()?;
        let dir = Scratch::new("redis")?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir.0)
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server not found: scripts/test.sh installs it (lib.sh ensure_redis)")?;
        let redis = Redis {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.command(&["PING"]).ok().as_deref() != Some("PONG") {
            if Instant::now() > deadline {
                bail!("redis-server did not answer PING");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One command; the reply as text (a bulk or simple string, an integer, or an array's
    /// items joined by newlines).
    pub fn command(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes())?;
        let mut r = BufReader::new(s);
        read_reply(&mut r)
    }

    /// The sum of every Limitador counter in `domain` whose key names `condition` (its
    /// limit is stored in the key): what the service has counted for that limit.
    pub fn limitador_count(&self, domain: &str, condition: &str) -> anyhow::Result<u64> {
        let keys = self.command(&["KEYS", &format!("namespace:{{{domain}}},counter:*")])?;
        let mut total = 0;
        for key in keys
            .lines()
            .filter(|k| k.contains(condition) && !k.ends_with("reservations"))
        {
            total += self.command(&["GET", key])?.parse::<u64>().unwrap_or(0);
        }
        Ok(total)
    }
}

fn read_reply(r: &mut impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end();
    let (kind, rest) = line.split_at(1.min(line.len()));
    match kind {
        "+" | ":" => Ok(rest.to_string()),
        "-" => bail!("redis: {rest}"),
        "$" => {
            let n: i64 = rest.parse()?;
            if n < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0; usize::try_from(n)? + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(buf.len() - 2);
            Ok(String::from_utf8(buf)?)
        }
        "*" => {
            let n: i64 = rest.parse()?;
            let items: anyhow::Result<Vec<String>> = (0..n.max(0)).map(|_| read_reply(r)).collect();
            Ok(items?.join("\n"))
        }
        _ => bail!("redis: unexpected reply {line:?}"),
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test rate limit service's binary (`RLS_BIN`).
pub fn rls_bin() -> anyhow::Result<PathBuf> {
    let bin = std::env::var_os("RLS_BIN")
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("RLS_BIN is not set: run `source scripts/lib.sh && build_rls` (scripts/test.sh does)"))?;
    if !bin.exists() {
        bail!("RLS_BIN={} does not exist: run build_rls", bin.display());
    }
    Ok(bin)
}

/// One rate limit service process on a fixed port; killed on drop, restartable.
pub struct RateLimitService {
    pub port: u16,
    args: Vec<String>,
    limits: PathBuf,
    child: Option<Child>,
    _dir: Scratch,
}

impl RateLimitService {
    /// `flavor`: `limitador` or `envoy-ratelimit`; `limits`: the file's text; `redis`:
    /// counters there, else in memory.
    pub fn start(flavor: &str, limits: &str, redis: Option<&Redis>) -> anyhow::Result<Self> {
        let dir = Scratch::new("rls")?;
        let path = dir.0.join("limits.yaml");
        std::fs::write(&path, limits)?;
        let mut args = vec!["--flavor".to_string(), flavor.to_string()];
        if let Some(r) = redis {
            args.extend(["--redis".to_string(), r.url()]);
        }
        let mut s = RateLimitService {
            port: free_port()?,
            args,
            limits: path,
            child: None,
            _dir: dir,
        };
        s.restart()?;
        Ok(s)
    }

    /// Starts it (again) on its port and waits for its readiness line.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("the rate limit service is running");
        }
        let mut child = Command::new(rls_bin()?)
            .args(["--port", &self.port.to_string(), "--limits"])
            .arg(&self.limits)
            .args(&self.args)
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if !line.starts_with("listening on") {
            let _ = child.kill();
            bail!("the rate limit service did not start: {line:?}");
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RateLimitService {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A listener that accepts connections and never answers: a service that hangs.
pub struct Hung {
    pub port: u16,
    _thread: std::thread::JoinHandle<()>,
}

impl Hung {
    pub fn start() -> anyhow::Result<Hung> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming().flatten() {
                held.push(conn);
            }
        });
        Ok(Hung {
            port,
            _thread: thread,
        })
    }
}
