//! The harness that integration tests and the local federation share: it
//! drives the real `tabadul-*` binaries as separate processes, with
//! certificates made at run time and ports chosen by the kernel.
//!
//! It does not reimplement anything the binaries do: certificates come from
//! `tabadul-certs`, imports from `tabadul-node import`, and so on.
#![forbid(unsafe_code)]

pub mod adversary;
pub mod hostile;
pub mod http;
pub mod microdata;
pub mod synthetic;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tabadul_certs::tls::{self, Expect, TlsFiles};
use tabadul_certs::{Identity, Role};
use tabadul_proto::pb;

/// The network name used by tests and the demo.
pub const NETWORK: &str = "alo";

/// Path of a workspace binary, built into the same target directory as the
/// running test or program (`cargo build --workspace` builds them all).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace` first", path.display());
    path
}

/// The repository root: `TABADUL_REPO`, or the nearest directory at or
/// above the current one that holds `deploy/dictionary.toml` (tests run in
/// `tests/`, the demo script runs at the root).
///
/// Found at run time on purpose: the shared target directory can hold a
/// harness compiled in another checkout, so a path baked in at compile time
/// could point there.
pub fn repo_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("TABADUL_REPO") {
        return PathBuf::from(dir);
    }
    let cwd = std::env::current_dir().expect("a current directory");
    cwd.ancestors()
        .find(|d| d.join("deploy/dictionary.toml").is_file())
        .unwrap_or_else(|| panic!("no deploy/dictionary.toml at or above {}: run from the repository or set TABADUL_REPO", cwd.display()))
        .to_path_buf()
}

/// The shipped data dictionary.
pub fn dictionary_path() -> PathBuf {
    repo_root().join("deploy/dictionary.toml")
}

/// Runs a command and returns its output, failing with its stderr when it fails.
pub fn run_ok(mut cmd: impl std::borrow::BorrowMut<Command>) -> Result<Output> {
    let cmd = cmd.borrow_mut();
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}):\n{}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(out)
}

/// A certificate and its key on disk.
#[derive(Debug, Clone)]
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A network CA made with `tabadul-certs`.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_dir: PathBuf,
    pub certs_dir: PathBuf,
}

impl Pki {
    pub fn init(dir: &Path) -> Result<Self> {
        let ca_dir = dir.join("ca");
        run_ok(Command::new(bin("tabadul-certs")).args(["init", "--network", NETWORK, "--ca-dir"]).arg(&ca_dir))?;
        Ok(Pki { ca_dir, certs_dir: dir.join("certs") })
    }

    /// Issues a certificate valid for loopback (127.0.0.1 and localhost).
    pub fn issue(&self, role: &str, id: &str) -> Result<Cert> {
        run_ok(
            Command::new(bin("tabadul-certs"))
                .args(["issue", "--role", role, "--id", id, "--ip", "127.0.0.1", "--dns", "localhost", "--ca-dir"])
                .arg(&self.ca_dir)
                .arg("--out")
                .arg(&self.certs_dir),
        )?;
        Ok(Cert { cert: self.certs_dir.join(format!("{role}-{id}.pem")), key: self.certs_dir.join(format!("{role}-{id}.key")) })
    }

    pub fn revoke(&self, cert: &Cert) -> Result<()> {
        run_ok(Command::new(bin("tabadul-certs")).arg("revoke").arg("--ca-dir").arg(&self.ca_dir).arg("--cert").arg(&cert.cert))?;
        Ok(())
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.ca_dir.join("ca.pem")
    }
    pub fn crl(&self) -> PathBuf {
        self.ca_dir.join("crl.pem")
    }

    /// The signing key of log `origin` (`alo/node/MAR`, `alo/hub/alo`),
    /// made with `tabadul-audit keygen` on first use; returns its path and
    /// verifier key.
    pub fn log_key(&self, origin: &str) -> Result<(PathBuf, String)> {
        let dir = self.ca_dir.parent().unwrap_or(Path::new(".")).join("log-keys");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.key", origin.replace('/', "_")));
        if !path.exists() {
            run_ok(Command::new(bin("tabadul-audit")).args(["keygen", "--origin", origin, "--out"]).arg(&path))?;
        }
        let vkey = std::fs::read_to_string(tabadul_audit::vkey_path(&path))?.trim().to_owned();
        Ok((path, vkey))
    }

    /// The hub log's key (the hub of the tests and the demo is `alo`).
    pub fn hub_log_key(&self) -> Result<(PathBuf, String)> {
        self.log_key(&format!("{NETWORK}/hub/alo"))
    }

    pub fn tls_files(&self, cert: &Cert) -> TlsFiles {
        TlsFiles { ca: self.ca_cert(), cert: cert.cert.clone(), key: cert.key.clone(), crl: Some(self.crl()) }
    }
}

/// A node's directory: config, policy, data.
#[derive(Debug, Clone)]
pub struct NodeDir {
    pub member: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub policy: PathBuf,
    /// The verifier key of the node's log.
    pub log_vkey: String,
    /// The verifier key of the node's witness key (its cosignatures).
    pub witness_vkey: String,
}

impl NodeDir {
    /// Writes `node.toml` and `policy.toml` for `member` under `root/<member>`.
    pub fn create(root: &Path, pki: &Pki, member: &str, policy: &str) -> Result<Self> {
        let cert = pki.issue("node", member)?;
        let dir = root.join(member);
        std::fs::create_dir_all(&dir)?;
        let policy_path = dir.join("policy.toml");
        std::fs::write(&policy_path, policy)?;
        let config = dir.join("node.toml");
        let (log_key, log_vkey) = pki.log_key(&format!("{NETWORK}/node/{member}"))?;
        let (witness_key, witness_vkey) = pki.log_key(&format!("{NETWORK}/witness/{member}"))?;
        let (_, hub_vkey) = pki.hub_log_key()?;
        std::fs::write(
            &config,
            format!(
                "data_dir = \"data\"\ndictionary = {:?}\npolicy = \"policy.toml\"\nreload_interval_ms = 200\nlog_key = {:?}\nwitness_key = {:?}\nwitness_logs = [{:?}]\n\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\ncrl = {:?}\n",
                dictionary_path(),
                log_key,
                witness_key,
                hub_vkey,
                pki.ca_cert(),
                cert.cert,
                cert.key,
                pki.crl()
            ),
        )?;
        Ok(NodeDir { member: member.to_owned(), dir, config, policy: policy_path, log_vkey, witness_vkey })
    }

    /// `tabadul-node <args> --config <this node>`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("tabadul-node"));
        cmd.arg("--config").arg(&self.config).args(args);
        cmd
    }

    /// Imports files with the CLI; returns its output whatever the outcome.
    pub fn import(&self, files: &[&Path]) -> Result<Output> {
        let mut cmd = self.command(&["import"]);
        cmd.args(files);
        Ok(cmd.output()?)
    }

    pub fn start(&self) -> Result<Proc> {
        self.start_at("127.0.0.1:0")
    }

    /// Starts the node with extra environment variables (e.g. libfaketime's).
    pub fn start_with_env(&self, envs: &[(&str, &str)]) -> Result<Proc> {
        let ready = self.dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        let mut cmd = self.command(&["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--ready-file"]);
        cmd.arg(&ready).envs(envs.iter().copied());
        Proc::spawn(cmd, &ready, &self.dir.join("node.log"))
    }

    /// Starts the node on a given address (a restart on the port the hub knows).
    pub fn start_at(&self, listen: &str) -> Result<Proc> {
        let ready = self.dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        let mut cmd = self.command(&["serve", "--listen", listen, "--metrics-listen", "127.0.0.1:0", "--ready-file"]);
        cmd.arg(&ready);
        Proc::spawn(cmd, &ready, &self.dir.join("node.log"))
    }
}

impl Pki {
    /// Fetches the signed log served at `addr` by `server`
    /// (`spiffe://alo/node/MAR`) into `out` with `tabadul-audit fetch`, as
    /// an auditor of the network would.
    pub fn fetch_log(&self, addr: SocketAddr, server: &str, out: &Path) -> Result<PathBuf> {
        let auditor = self.issue("auditor", "court")?;
        run_ok(
            Command::new(bin("tabadul-audit"))
                .args(["fetch", "--endpoint", &addr.to_string(), "--server", server, "--out"])
                .arg(out)
                .arg("--ca")
                .arg(self.ca_cert())
                .arg("--cert")
                .arg(&auditor.cert)
                .arg("--key")
                .arg(&auditor.key)
                .arg("--crl")
                .arg(self.crl()),
        )?;
        Ok(out.to_owned())
    }
}

/// A running binary; killed when dropped.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    /// Where it serves Prometheus metrics, if it does.
    pub metrics: Option<SocketAddr>,
    /// Where the hub serves its HTTP front door.
    pub http: Option<SocketAddr>,
}

impl Proc {
    /// Spawns a server and waits until it writes its bound address to `ready`.
    pub fn spawn(mut cmd: Command, ready: &Path, log: &Path) -> Result<Self> {
        let log_file = std::fs::File::create(log)?;
        cmd.stdin(Stdio::null()).stdout(log_file.try_clone()?).stderr(log_file);
        cmd.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
        let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(ready)
                && let Ok(addr) = text.trim().parse()
            {
                let metrics = std::fs::read_to_string(ready.with_extension("metrics")).ok().and_then(|t| t.trim().parse().ok());
                let http = std::fs::read_to_string(ready.with_extension("http")).ok().and_then(|t| t.trim().parse().ok());
                return Ok(Proc { child, addr, log: log.to_owned(), metrics, http });
            }
            if let Some(status) = child.try_wait()? {
                bail!("{cmd:?} exited ({status}) before it was ready:\n{}", std::fs::read_to_string(log).unwrap_or_default());
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                bail!("{cmd:?} was not ready after 60 s:\n{}", std::fs::read_to_string(log).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /metrics`: the Prometheus text.
    pub fn scrape(&self) -> Result<String> {
        use std::io::{Read, Write};
        let addr = self.metrics.context("this process serves no metrics")?;
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("metrics answered {head}");
        }
        Ok(body.to_owned())
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`-STOP`, `-CONT`, `-HUP`, `-TERM`) with kill(1).
    pub fn signal(&self, sig: &str) -> Result<()> {
        run_ok(Command::new("kill").arg(sig).arg(self.child.id().to_string()))?;
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.signal("-CONT");
        self.kill();
    }
}

/// One member entry of a hub config.
#[derive(Debug, Clone)]
pub struct HubMember {
    pub code: String,
    pub endpoint: String,
    pub log_vkey: String,
    /// Whether the node witnesses the hub's log.
    pub witness: bool,
    /// The verifier key its cosignatures must verify with.
    pub witness_vkey: Option<String>,
}

impl HubMember {
    /// A member at `endpoint` whose log key is the one `pki` holds for it.
    pub fn new(pki: &Pki, code: &str, endpoint: impl Into<String>) -> Result<Self> {
        let (_, log_vkey) = pki.log_key(&format!("{NETWORK}/node/{code}"))?;
        let (_, witness_vkey) = pki.log_key(&format!("{NETWORK}/witness/{code}"))?;
        Ok(HubMember { code: code.to_owned(), endpoint: endpoint.into(), log_vkey, witness: true, witness_vkey: Some(witness_vkey) })
    }
}

/// Writes `hub.toml` under `dir` and starts the hub (its HTTP front door
/// over HTTPS).
pub fn start_hub(dir: &Path, pki: &Pki, hub_cert: &Cert, members: &[HubMember], deadline_ms: u64) -> Result<Proc> {
    start_hub_with(dir, pki, hub_cert, members, deadline_ms, "")
}

/// [`start_hub`] with more configuration in `hub.toml`: `extra`'s
/// top-level keys (the lines before its first `[table]`) go at the top,
/// its tables (`[http]`, `[cache]`) at the end.
pub fn start_hub_with(dir: &Path, pki: &Pki, hub_cert: &Cert, members: &[HubMember], deadline_ms: u64, extra: &str) -> Result<Proc> {
    write_hub_config(dir, pki, hub_cert, members, deadline_ms, extra)?;
    restart_hub(dir)
}

/// Writes the `hub.toml` [`start_hub_with`] starts the hub with.
pub fn write_hub_config(dir: &Path, pki: &Pki, hub_cert: &Cert, members: &[HubMember], deadline_ms: u64, extra: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let (log_key, _) = pki.hub_log_key()?;
    let tables_at = if extra.starts_with('[') { 0 } else { extra.find("\n[").map_or(extra.len(), |i| i + 1) };
    let (top_level, extra) = extra.split_at(tables_at);
    let mut text = format!(
        "data_dir = \"data\"\ndictionary = {:?}\ndeadline_ms = {deadline_ms}\nlog_key = {:?}\nwitness_interval_ms = 300\n{top_level}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\ncrl = {:?}\n",
        dictionary_path(),
        log_key,
        pki.ca_cert(),
        hub_cert.cert,
        hub_cert.key,
        pki.crl()
    );
    for m in members {
        text.push_str(&format!("\n[[member]]\ncode = {:?}\nendpoint = {:?}\nlog_vkey = {:?}\nwitness = {}\n", m.code, m.endpoint, m.log_vkey, m.witness));
        if let Some(v) = &m.witness_vkey {
            text.push_str(&format!("witness_vkey = {v:?}\n"));
        }
    }
    text.push('\n');
    text.push_str(extra);
    std::fs::write(dir.join("hub.toml"), text)?;
    Ok(())
}

/// Starts the hub whose `hub.toml` (written by [`start_hub_with`], perhaps
/// edited since) is in `dir`.
pub fn restart_hub(dir: &Path) -> Result<Proc> {
    restart_hub_at(dir, "127.0.0.1:0", "127.0.0.1:0")
}

/// [`restart_hub`] on given gRPC and HTTP addresses (the ones a network
/// directory lists for it).
pub fn restart_hub_at(dir: &Path, listen: &str, http_listen: &str) -> Result<Proc> {
    let config = dir.join("hub.toml");
    let ready = dir.join("ready");
    let _ = std::fs::remove_file(&ready);
    let mut cmd = Command::new(bin("tabadul-hub"));
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["--listen", listen, "--metrics-listen", "127.0.0.1:0", "--http-listen", http_listen, "--ready-file"])
        .arg(&ready);
    Proc::spawn(cmd, &ready, &dir.join("hub.log"))
}

/// An address on loopback that nothing listens on (bound, then released).
pub fn dead_endpoint() -> Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// A gRPC client of a node, speaking as the holder of `files`.
pub fn node_client(addr: SocketAddr, files: &TlsFiles, member: &str) -> Result<pb::node_client::NodeClient<tonic::transport::Channel>> {
    let expect = Expect::Identity(Identity::new(NETWORK, Role::Node, member)?);
    let channel = tls::channel(&addr.to_string(), expect, tls::client_config(files)?, Duration::from_secs(5))?;
    Ok(pb::node_client::NodeClient::new(channel))
}

/// A gRPC client of the hub's operator API.
pub fn hub_client(addr: SocketAddr, files: &TlsFiles) -> Result<pb::hub_client::HubClient<tonic::transport::Channel>> {
    let channel =
        tls::channel(&addr.to_string(), Expect::Role { network: NETWORK.into(), role: Role::Hub }, tls::client_config(files)?, Duration::from_secs(5))?;
    Ok(pb::hub_client::HubClient::new(channel))
}

/// The decision and cells of a node query stream.
pub async fn collect(
    client: &mut pb::node_client::NodeClient<tonic::transport::Channel>,
    q: pb::Query,
) -> std::result::Result<(pb::Decision, Vec<pb::Cell>), tonic::Status> {
    let mut stream = client.query(q).await?.into_inner();
    let mut decision = None;
    let mut cells = Vec::new();
    while let Some(m) = stream.message().await? {
        match m.item {
            Some(pb::query_response::Item::Decision(d)) => decision = Some(d),
            Some(pb::query_response::Item::Cell(c)) => cells.push(c),
            Some(pb::query_response::Item::Receipt(_)) | None => {}
        }
    }
    Ok((decision.ok_or_else(|| tonic::Status::data_loss("no decision"))?, cells))
}

/// Waits until `f` returns true, up to `timeout`.
pub async fn eventually(timeout: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Headless Chromium (Debian's package), as the machine's CI runs it.
pub fn chromium(args: &[&str], url: &str) -> std::process::Output {
    let profile = tempfile::tempdir().expect("a temporary profile directory");
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,1400",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium (scripts/prepare.sh installs it)")
}
