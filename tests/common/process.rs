//! Running the real `candle_model_server` binary: spawn with flags, learn its ports from its
//! JSON log, send signals, collect what it printed.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Spawned {
    pub child: Child,
    pub grpc_addr: SocketAddr,
    pub rest_addr: Option<SocketAddr>,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Starts the binary in `cwd` with `args` (plus JSON logs on loopback) and waits for its
/// "gRPC listening" line. Returns the error output if it exits first.
pub fn spawn_server(cwd: &Path, args: &[&str]) -> Result<Spawned, String> {
    spawn_server_with_env(cwd, args, &[])
}

/// [`spawn_server`] with extra environment variables (object-storage credentials...).
pub fn spawn_server_with_env(
    cwd: &Path,
    args: &[&str],
    env: &[(String, String)],
) -> Result<Spawned, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_candle_model_server"))
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["--log_format=json", "--host=127.0.0.1"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server binary runs");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) {
                    let address = json["address"]
                        .as_str()
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                    match json["message"].as_str() {
                        Some("gRPC listening") => {
                            let _ = tx.send(("grpc", address));
                        }
                        Some("REST listening") => {
                            let _ = tx.send(("rest", address));
                        }
                        _ => {}
                    }
                }
                log.lock().unwrap().push(line);
            }
            let _ = tx.send(("eof", None));
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut grpc, mut rest) = (None, None);
    while grpc.is_none() || (rest.is_none() && !args.contains(&"--rest_api_port=0")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(("grpc", a)) => grpc = a,
            Ok(("rest", a)) => rest = a,
            Ok(_) | Err(_) => {
                let _ = child.wait();
                return Err(log.lock().unwrap().join("\n"));
            }
        }
    }
    Ok(Spawned {
        child,
        grpc_addr: grpc.unwrap(),
        rest_addr: rest,
        log,
    })
}

impl Spawned {
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit (at most 60 s) and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("the server did not exit");
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary expecting it to fail at start-up; returns (exit code, stderr).
pub fn run_failing(cwd: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_candle_model_server"))
        .current_dir(cwd)
        .args(["--host=127.0.0.1", "--port=0", "--rest_api_port=0"])
        .args(args)
        .output()
        .expect("the server binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `candle_serving_cli` with `args` and extra environment variables; (success, what it
/// printed on stdout and stderr).
pub fn run_cli<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(String, String)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_candle_serving_cli"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(args)
        .output()
        .expect("the CLI binary runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
