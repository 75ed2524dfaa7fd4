//! Real services for the tests, each started on free loopback ports and stopped when
//! dropped: redis-server (Debian), ArcadeDB with its Bolt plugin (unpacked by
//! `scripts/setup_services.sh` into `.cache/arcadedb`) and an S3 API server (moto, from
//! PyPI, in `.cache/venv-moto`). A missing service is a test
//! failure that says how to install it, never a silent skip.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::repo_root;

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut redis = Redis {
            port: free_port(),
            child: None,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts it again on the same port (after [`Redis::stop`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}); run scripts/setup_services.sh")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    /// One command over RESP; the first line of the answer (`+PONG`, `:42`, `$5`...).
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(out.as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim_end().to_string())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// ArcadeDB serving the database `graphdb` over Bolt (and HTTP, both on loopback).
pub struct Arcade {
    pub bolt_port: u16,
    pub http_port: u16,
    root: tempfile::TempDir,
    child: Option<Child>,
}

pub const ARCADE_PASSWORD: &str = "doctor-test-pw";

pub fn arcade_home() -> PathBuf {
    repo_root().join(".cache/arcadedb")
}

impl Arcade {
    pub fn start() -> Arcade {
        let mut arcade = Arcade {
            bolt_port: free_port(),
            http_port: free_port(),
            root: tempfile::tempdir().unwrap(),
            child: None,
        };
        arcade.restart();
        arcade
    }

    pub fn url(&self) -> String {
        format!("bolt://127.0.0.1:{}", self.bolt_port)
    }

    /// Starts it again on the same ports and data (after [`Arcade::stop`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let home = arcade_home();
        let java = home.join("jre/bin/java");
        assert!(
            java.exists(),
            "no ArcadeDB in {}; run scripts/setup_services.sh",
            home.display()
        );
        let mut child = Command::new(java)
            .current_dir(self.root.path())
            .arg("-Xmx384m")
            .arg("-cp")
            .arg(format!("{}/jars/*", home.display()))
            .arg(format!(
                "-Darcadedb.server.rootPath={}",
                self.root.path().display()
            ))
            .arg(format!("-Darcadedb.server.rootPassword={ARCADE_PASSWORD}"))
            .arg("-Darcadedb.server.defaultDatabases=graphdb[root]")
            .arg("-Darcadedb.server.plugins=Bolt:com.arcadedb.bolt.BoltProtocolPlugin")
            .arg("-Darcadedb.bolt.host=127.0.0.1")
            .arg(format!("-Darcadedb.bolt.port={}", self.bolt_port))
            .arg("-Darcadedb.server.httpIncomingHost=127.0.0.1")
            .arg(format!(
                "-Darcadedb.server.httpIncomingPort={}",
                self.http_port
            ))
            .arg("com.arcadedb.server.ArcadeDBServer")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("java runs");
        // ArcadeDB logs to stderr; keep reading it so it never blocks on a full pipe.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("ArcadeDB Server started") {
                    let _ = tx.send(Ok(()));
                }
                lines.push(line);
            }
            let _ = tx.send(Err(lines.join("\n")));
        });
        match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(Ok(())) => {}
            Ok(Err(log)) => {
                kill(&mut child);
                panic!("ArcadeDB exited before it started:\n{log}");
            }
            Err(_) => {
                kill(&mut child);
                panic!("ArcadeDB did not start within 90 s");
            }
        }
        // The Bolt listener comes up with the server; make sure it accepts.
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], self.bolt_port))).is_err() {
            assert!(
                Instant::now() < deadline,
                "ArcadeDB's Bolt port {} never opened",
                self.bolt_port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }
}

impl Drop for Arcade {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An S3 API server: moto's `moto_server` (PyPI), in memory, on a loopback port. Its
/// venv also has boto3, the uploader the tests use as a writer of our own making.
pub struct S3 {
    pub port: u16,
    child: Child,
}

pub fn moto_venv() -> PathBuf {
    repo_root().join(".cache/venv-moto")
}

impl S3 {
    pub fn start() -> S3 {
        let port = free_port();
        let binary = moto_venv().join("bin/moto_server");
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}); run scripts/setup_services.sh",
                    binary.display()
                )
            });
        let s3 = S3 { port, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while s3.http("GET", "/").is_none() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s3
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The standard variables a client of this server needs.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", self.endpoint().as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// CreateBucket (moto does not check signatures).
    pub fn create_bucket(&self, name: &str) {
        let status = self.http("PUT", &format!("/{name}"));
        assert_eq!(status, Some(200), "CreateBucket {name}");
    }

    /// One plain HTTP/1.1 request; the status code.
    fn http(&self, method: &str, path: &str) -> Option<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Runs a boto3 script against this server (`s3` is a client bound to it); its stdout.
    pub fn boto3(&self, script: &str) -> String {
        let program = format!(
            "import boto3, sys\ns3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\n{script}",
            self.endpoint()
        );
        let out = Command::new(moto_venv().join("bin/python"))
            .arg("-c")
            .arg(&program)
            .output()
            .expect("the moto venv's python runs");
        assert!(
            out.status.success(),
            "boto3 script failed:\n{program}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}
