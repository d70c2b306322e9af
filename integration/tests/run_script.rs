//! `scripts/run.sh` as a user meets it: with a port taken it names the port and starts
//! nothing; otherwise the "try it" lines come once Envoy is ready, and when Envoy stops, the
//! mock stops too and the script exits non-zero. It runs on what the test suite already
//! built (`AI_PROXY_SKIP_BUILD=1`).

use std::io::{BufRead as _, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use integration::envoy::repo_root;
use serde_json::json;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// run.sh on the given ports, on the built binaries, offline (the mock).
fn run_sh(listen: u16, admin: u16, mock: u16) -> Child {
    Command::new("bash")
        .arg(repo_root().join("scripts/run.sh"))
        .env("AI_PROXY_SKIP_BUILD", "1")
        .env("AI_PROXY_LISTEN_PORT", listen.to_string())
        .env("AI_PROXY_ADMIN_PORT", admin.to_string())
        .env("MOCK_PORT", mock.to_string())
        .env_remove("OPENAI_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Stops the script (its own trap stops what it started) if a test ends early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill").arg(self.0.id().to_string()).status();
            let _ = self.0.wait();
        }
    }
}

/// The script's stderr, line by line.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < limit,
            "run.sh still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_taken_port_is_named_and_nothing_starts() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    let (listen, admin) = (free_port(), free_port());
    let mut run = Running(run_sh(listen, admin, taken));
    let rx = lines(&mut run.0);
    let status = wait_exit(&mut run.0, Duration::from_secs(20));
    assert!(!status.success());
    let stderr: Vec<String> = rx.try_iter().collect();
    let stderr = stderr.join("\n");
    assert!(
        stderr.contains(&format!("port {taken} is taken"))
            && stderr.contains(&format!(
                "set MOCK_PORT to a free port, e.g. MOCK_PORT={}",
                taken + 1
            )),
        "{stderr}"
    );
    assert!(!stderr.contains(&format!("port {listen}")), "{stderr}");
    assert!(!stderr.contains("Try it"), "{stderr}");
    // Nothing was started on the free ports.
    assert!(TcpStream::connect(("127.0.0.1", admin)).is_err());
    assert!(TcpStream::connect(("127.0.0.1", listen)).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_banner_comes_when_envoy_is_ready_and_one_stopping_stops_all() {
    let (listen, admin, mock) = (free_port(), free_port(), free_port());
    let mut run = Running(run_sh(listen, admin, mock));
    let rx = lines(&mut run.0);
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains("Envoy is ready. Try it") => break,
            Ok(line) => seen.push(line),
            Err(_) => {
                assert!(
                    run.0.try_wait().unwrap().is_none(),
                    "run.sh exited:\n{}",
                    seen.join("\n")
                );
                assert!(
                    start.elapsed() < Duration::from_secs(90),
                    "no banner:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
    let client = reqwest::Client::new();
    let ready = client
        .get(format!("http://127.0.0.1:{admin}/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "banner before Envoy was ready");
    let chat = client
        .post(format!("http://127.0.0.1:{listen}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(json!({"messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);

    // Envoy stops: the script stops the mock and says so.
    let _ = client
        .post(format!("http://127.0.0.1:{admin}/quitquitquit"))
        .send()
        .await;
    let status = wait_exit(&mut run.0, Duration::from_secs(20));
    assert!(!status.success());
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("Envoy stopped") && l.contains("stopping everything")),
        "{}",
        rest.join("\n")
    );
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", mock)).is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the mock outlived Envoy"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
