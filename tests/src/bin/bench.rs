//! `tabadul-bench`: the benchmarks of BENCHMARKS.md, on real processes.
//!
//! - `query-rate`: node `Query` over mTLS with policy evaluation, against the
//!   gRPC health check served by the same node over the same mTLS (a bare
//!   tonic service), same run, as a ratio.
//! - `federation`: federated query latency over 22 local nodes against the
//!   same query to one node, p50/p99 and their ratio.
//! - `import`: `tabadul-node import` of a generated SDMX-CSV file.
//! - `log`: the signed log: durable batched appends against raw RocksDB
//!   synced `WriteBatch` puts of the same bytes from the same threads;
//!   append-to-checkpoint latency; proofs made and verified per second;
//!   bytes per entry; offline `verify` against bare SHA-256 of the entries.
//! - `front-door`: an SDMX data request over 22 nodes through the hub's HTTP
//!   front door, cold (cache off) and cached, p50/p99 and requests/s, against
//!   the same query over the operator gRPC API in the same run.
//! - `ledger-audit`: the probe count + mean query after 0, 100, 1,000 and
//!   10,000 earlier released cells: what secondary suppression costs as
//!   the release ledger grows.
//! - `microdata`: import of N job-seeker records, then count and mean by
//!   region × ISCO group × sex end to end (gRPC, mTLS, policy, disclosure
//!   control, ledger, log), cold and warm, and the node's peak memory. The
//!   DuckDB side of the comparison runs in `scripts/bench.sh` on the same file.
//! - `slow-clients`: an honest HTTPS client's answers/s and p99 latency on
//!   the front door while N hostile clients (silent TLS, HTTP/2 preface
//!   then silence, slowloris, slow body) hold connections from M loopback
//!   addresses, reconnecting whenever the hub cuts them off.

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Parser, Subcommand};
use tabadul_proto::pb;
use tabadul_tests::{HubMember, NodeDir, Pki, hub_client, node_client, run_ok, start_hub_with, synthetic};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    QueryRate {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    Federation {
        #[arg(long, default_value_t = 300)]
        queries: usize,
    },
    FrontDoor {
        #[arg(long, default_value_t = 200)]
        queries: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Writes an SDMX-CSV file of ROWS observations to FILE and times
    /// `tabadul-node import` of it.
    Import {
        #[arg(long, default_value_t = 5_000_000)]
        rows: u64,
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Many concurrent federated queries over local nodes for a while:
    /// completed, failed, member outcomes, latency, peak RSS per process.
    Load {
        #[arg(long, default_value_t = 22)]
        nodes: usize,
        #[arg(long, default_value_t = 1000)]
        concurrency: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Per-member deadline of each federated query (ms); the hub's
        /// default.
        #[arg(long, default_value_t = 3_000)]
        deadline_ms: u64,
        /// Let the hub serve repeated queries from its cache (off: every
        /// query fans out to every node, the worst case).
        #[arg(long)]
        cache: bool,
        /// The hub's max_concurrent_queries (its default when absent).
        #[arg(long)]
        max_concurrent_queries: Option<usize>,
    },
    Microdata {
        #[arg(long, default_value_t = 10_000_000)]
        records: usize,
        /// The records' CSV (written if missing).
        #[arg(long)]
        file: std::path::PathBuf,
        /// Warm repetitions of the query pair.
        #[arg(long, default_value_t = 7)]
        repeats: usize,
        /// Write the warm median (seconds) here, for the DuckDB comparison.
        #[arg(long)]
        median_out: Option<std::path::PathBuf>,
    },
    /// What secondary suppression's audit costs per query as the release
    /// ledger grows: the same probe query after 0, 100, 1,000 and 10,000
    /// earlier released cells.
    LedgerAudit {
        #[arg(long, default_value_t = 200_000)]
        records: usize,
        /// Repetitions of the probe at each ledger size.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
    SlowClients {
        /// Hostile connections held at once.
        #[arg(long, default_value_t = 1000)]
        slow: usize,
        /// Loopback source addresses they come from (127.0.0.2, ...).
        #[arg(long, default_value_t = 1)]
        addresses: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// More `[http]` settings for the hub (e.g. `[http.connections]`).
        #[arg(long, default_value = "")]
        hub_config: String,
    },
    Log {
        #[arg(long, default_value_t = 100_000)]
        entries: u64,
        #[arg(long, default_value_t = 64)]
        concurrency: u64,
    },
}

const POLICY: &str = "[[rule]]\nid = \"hub\"\nrequester = \"hub\"\ndataflows = [\"UNE_RATE\", \"UNE_PERS\", \"LF_PERS\"]\nbreakdowns = [\"SEX\", \"AGE\"]\n";

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new()?;
    match args.command {
        Bench::QueryRate { seconds, concurrency } => rt.block_on(query_rate(seconds, concurrency)),
        Bench::Federation { queries } => rt.block_on(federation(queries)),
        Bench::FrontDoor { queries, seconds, concurrency } => rt.block_on(front_door(queries, seconds, concurrency)),
        Bench::Import { rows, file } => import(rows, &file),
        Bench::Log { entries, concurrency } => log_bench(entries, concurrency),
        Bench::LedgerAudit { records, repeats } => rt.block_on(ledger_audit(records, repeats)),
        Bench::Microdata { records, file, repeats, median_out } => rt.block_on(microdata(records, &file, repeats, median_out.as_deref())),
        Bench::SlowClients { slow, addresses, seconds, hub_config } => rt.block_on(slow_clients(slow, addresses, seconds, &hub_config)),
        Bench::Load { nodes, concurrency, seconds, deadline_ms, cache, max_concurrent_queries } => {
            rt.block_on(load(nodes, concurrency, seconds, deadline_ms, cache, max_concurrent_queries))
        }
    }
}

fn node(root: &std::path::Path, pki: &Pki, member: &str) -> Result<NodeDir> {
    let node = NodeDir::create(root, pki, member, POLICY)?;
    let data = node.dir.join("data.csv");
    std::fs::write(&data, synthetic::to_sdmx_csv(&synthetic::generate(member, 2015..=2025)))?;
    run_ok(node.command(&["import"]).arg(&data))?;
    Ok(node)
}

/// Starts a node for every member with synthetic data; returns the
/// processes and the hub's member entries.
fn all_nodes(root: &std::path::Path, pki: &Pki) -> Result<(Vec<tabadul_tests::Proc>, Vec<HubMember>)> {
    let mut procs = Vec::new();
    let mut members = Vec::new();
    for member in synthetic::members() {
        let proc = node(&root.join("nodes"), pki, member)?.start()?;
        members.push(HubMember::new(pki, member, proc.addr.to_string())?);
        procs.push(proc);
    }
    Ok((procs, members))
}

/// Runs `op` from `concurrency` tasks for `seconds`; returns completed calls per second.
async fn rate<F, Fut>(seconds: u64, concurrency: usize, op: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let until = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < until {
                    assert!(op().await, "a call failed during the benchmark");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total as f64 / seconds as f64
}

async fn query_rate(seconds: u64, concurrency: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::init(dir.path())?;
    let node = node(dir.path(), &pki, "MAR")?;
    let proc = node.start()?;
    let hub = pki.issue("hub", "alo")?;
    let files = pki.tls_files(&hub);
    let client = node_client(proc.addr, &files, "MAR")?;
    let channel = tabadul_certs::tls::channel(
        &proc.addr.to_string(),
        tabadul_certs::tls::Expect::Role { network: tabadul_tests::NETWORK.into(), role: tabadul_certs::Role::Node },
        tabadul_certs::tls::client_config(&files)?,
        Duration::from_secs(5),
    )?;
    let health = tonic_health::pb::health_client::HealthClient::new(channel);
    let q =
        pb::Query { dataflow: "UNE_RATE".into(), breakdown: vec!["SEX".into()], start_period: "2024".into(), end_period: "2024".into(), ..Default::default() };
    // Warm both paths.
    for _ in 0..50 {
        tabadul_tests::collect(&mut client.clone(), q.clone()).await?;
        health.clone().check(tonic_health::pb::HealthCheckRequest::default()).await?;
    }
    let echo = {
        let health = health.clone();
        rate(seconds, concurrency, move || {
            let mut h = health.clone();
            async move { h.check(tonic_health::pb::HealthCheckRequest::default()).await.is_ok() }
        })
        .await
    };
    let query = {
        let client = client.clone();
        let q = q.clone();
        rate(seconds, concurrency, move || {
            let mut c = client.clone();
            let q = q.clone();
            async move { tabadul_tests::collect(&mut c, q).await.is_ok_and(|(_, cells)| cells.len() == 3) }
        })
        .await
    };
    println!("| node Query (policy, 3 cells, event appended) | {query:.0} req/s |");
    println!("| bare tonic Health/Check, same node, same mTLS | {echo:.0} req/s |");
    println!("| ratio Query / bare | {:.2} |", query / echo);
    println!("(concurrency {concurrency}, {seconds} s each, one HTTP/2 connection)");
    drop(proc);
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn federation(queries: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::init(dir.path())?;
    let (procs, members) = all_nodes(dir.path(), &pki)?;
    let hub_cert = pki.issue("hub", "alo")?;
    // The cache off: every query goes to the members.
    let hub = start_hub_with(&dir.path().join("hub"), &pki, &hub_cert, &members, 5000, "[cache]\nmax_entries = 0\n")?;
    let operator = pki.issue("operator", "bench")?;
    let client = hub_client(hub.addr, &pki.tls_files(&operator))?;
    let request = |members: Vec<String>| pb::FederatedQueryRequest {
        query: Some(pb::Query {
            dataflow: "UNE_RATE".into(),
            breakdown: vec!["SEX".into()],
            start_period: "2024".into(),
            end_period: "2024".into(),
            ..Default::default()
        }),
        members,
        regional_aggregate: true,
        deadline_ms: 0,
    };
    let measure = async |members: Vec<String>, expect_answered: usize| -> Result<Vec<Duration>> {
        let mut times = Vec::with_capacity(queries);
        for i in 0..queries + 20 {
            let started = Instant::now();
            let r = client.clone().federated_query(request(members.clone())).await?.into_inner();
            let took = started.elapsed();
            let answered = r.members.iter().filter(|m| m.state == pb::MemberState::Answered as i32).count();
            anyhow::ensure!(answered == expect_answered, "{answered} answered: {:?}", r.members);
            if i >= 20 {
                times.push(took);
            }
        }
        times.sort();
        Ok(times)
    };
    // Interleave to share whatever the machine is doing.
    let one = measure(vec!["MAR".into()], 1).await?;
    let all = measure(vec![], 22).await?;
    let one2 = measure(vec!["MAR".into()], 1).await?;
    let mut one: Vec<Duration> = one.into_iter().chain(one2).collect();
    one.sort();
    let (p50_1, p99_1) = (percentile(&one, 0.5), percentile(&one, 0.99));
    let (p50_22, p99_22) = (percentile(&all, 0.5), percentile(&all, 0.99));
    println!("| federated UNE_RATE by SEX + aggregate, 1 node | p50 {:.2} ms | p99 {:.2} ms |", ms(p50_1), ms(p99_1));
    println!("| same, 22 nodes | p50 {:.2} ms | p99 {:.2} ms |", ms(p50_22), ms(p99_22));
    println!("| ratio 22 / 1 | p50 {:.2} | p99 {:.2} |", ms(p50_22) / ms(p50_1), ms(p99_22) / ms(p99_1));
    println!("({queries} sequential queries per series after 20 warm-up, 3 fan-outs per query: rate, numerator, denominator)");
    drop(hub);
    drop(procs);
    Ok(())
}

async fn front_door(queries: usize, seconds: u64, concurrency: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::init(dir.path())?;
    let (procs, members) = all_nodes(dir.path(), &pki)?;
    let hub_cert = pki.issue("hub", "alo")?;
    let plain = "[http]\ndangerous_plain_http = true\nrate_per_minute = 1000000\nburst = 100000\nmax_body_bytes = 65536\n";
    let cold = start_hub_with(&dir.path().join("hub-cold"), &pki, &hub_cert, &members, 5000, &format!("{plain}[cache]\nmax_entries = 0\n"))?;
    let cached = start_hub_with(&dir.path().join("hub-cached"), &pki, &hub_cert, &members, 5000, plain)?;
    let operator = pki.issue("operator", "bench")?;
    let grpc_cold = hub_client(cold.addr, &pki.tls_files(&operator))?;
    let grpc_cached = hub_client(cached.addr, &pki.tls_files(&operator))?;
    let request = pb::FederatedQueryRequest {
        query: Some(pb::Query {
            dataflow: "UNE_RATE".into(),
            filters: vec![pb::DimensionFilter { dimension: "SEX".into(), codes: vec!["F".into(), "M".into()] }],
            start_period: "2024".into(),
            end_period: "2024".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    // An empty REF_AREA part: every member.
    let path = std::sync::Arc::new("/sdmx/data/ALO,UNE_RATE,latest/.F+M.Y_GE15._T?startPeriod=2024&endPeriod=2024".to_owned());
    // Every call checks it got all 22 members' 2 cells.
    let grpc = |client: pb::hub_client::HubClient<tonic::transport::Channel>| {
        let request = request.clone();
        move || {
            let mut client = client.clone();
            let request = request.clone();
            async move {
                match client.federated_query(request).await {
                    Ok(r) if r.get_ref().cells.len() == 44 => true,
                    Ok(r) => {
                        let r = r.into_inner();
                        eprintln!("gRPC: {} cells; {:?}", r.cells.len(), r.members.iter().filter(|m| m.state != 1).collect::<Vec<_>>());
                        false
                    }
                    Err(e) => {
                        eprintln!("gRPC: {e}");
                        false
                    }
                }
            }
        }
    };
    // An operator token per hub (anonymous requests would get the public
    // tier, which these nodes' policy does not grant).
    let token = |hub: &str| -> Result<std::sync::Arc<String>> {
        let out = run_ok(
            std::process::Command::new(tabadul_tests::bin("tabadul-hub"))
                .arg("token")
                .arg("--config")
                .arg(dir.path().join(hub).join("hub.toml"))
                .args(["issue", "--name", "bench"]),
        )?;
        Ok(std::sync::Arc::new(format!("Bearer {}", String::from_utf8_lossy(&out.stdout).trim())))
    };
    let (cold_token, cached_token) = (token("hub-cold")?, token("hub-cached")?);
    let sdmx = |addr: std::net::SocketAddr, accept: &'static str, auth: std::sync::Arc<String>| {
        let path = path.clone();
        move || {
            let path = path.clone();
            let auth = auth.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    let a = tabadul_tests::http::Client::plain(addr).get(&path, &[("accept", accept), ("authorization", &auth)]);
                    match a {
                        Ok(a)
                            if a.status == 200 && (accept.contains("csv") && a.text().lines().count() == 45 || a.text().matches("<gen:Obs>").count() == 44) =>
                        {
                            true
                        }
                        Ok(a) => {
                            eprintln!("SDMX: {} {:?}: {}", a.status, a.header("x-tabadul-members"), a.text().chars().take(300).collect::<String>());
                            false
                        }
                        Err(e) => {
                            eprintln!("SDMX: {e}");
                            false
                        }
                    }
                })
                .await
                .unwrap_or(false)
            }
        }
    };
    const CSV: &str = "application/vnd.sdmx.data+csv;version=1.0.0";
    const XML: &str = "application/vnd.sdmx.genericdata+xml;version=2.1";
    async fn latency<F, Fut>(n: usize, op: F) -> Result<(f64, f64)>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut times = Vec::with_capacity(n);
        for i in 0..n + 10 {
            let started = Instant::now();
            anyhow::ensure!(op().await, "a call failed");
            if i >= 10 {
                times.push(started.elapsed());
            }
        }
        times.sort();
        Ok((ms(percentile(&times, 0.5)), ms(percentile(&times, 0.99))))
    }
    let (cold_http, cached_http) = (cold.http.expect("http"), cached.http.expect("http"));
    let rows = [
        ("operator gRPC, cold (cache off)", latency(queries, grpc(grpc_cold.clone())).await?, rate(seconds, concurrency, grpc(grpc_cold.clone())).await),
        (
            "SDMX REST, SDMX-CSV 1.0, cold",
            latency(queries, sdmx(cold_http, CSV, cold_token.clone())).await?,
            rate(seconds, concurrency, sdmx(cold_http, CSV, cold_token.clone())).await,
        ),
        (
            "SDMX REST, SDMX-ML generic, cold",
            latency(queries, sdmx(cold_http, XML, cold_token.clone())).await?,
            rate(seconds, concurrency, sdmx(cold_http, XML, cold_token.clone())).await,
        ),
        ("operator gRPC, cached", latency(queries, grpc(grpc_cached.clone())).await?, rate(seconds, concurrency, grpc(grpc_cached.clone())).await),
        (
            "SDMX REST, SDMX-CSV 1.0, cached",
            latency(queries, sdmx(cached_http, CSV, cached_token.clone())).await?,
            rate(seconds, concurrency, sdmx(cached_http, CSV, cached_token.clone())).await,
        ),
        (
            "SDMX REST, SDMX-ML generic, cached",
            latency(queries, sdmx(cached_http, XML, cached_token.clone())).await?,
            rate(seconds, concurrency, sdmx(cached_http, XML, cached_token.clone())).await,
        ),
    ];
    println!("| UNE_RATE, F+M, 2024, 22 members (44 cells) | p50 ms | p99 ms | requests/s ({concurrency} concurrent) |");
    println!("|---|---|---|---|");
    for (name, (p50, p99), rps) in &rows {
        println!("| {name} | {p50:.2} | {p99:.2} | {rps:.0} |");
    }
    let (g_cold, s_cold, g_hot, s_hot) = (&rows[0], &rows[1], &rows[3], &rows[4]);
    println!(
        "ratios SDMX-CSV / gRPC: cold p50 {:.2}, rps {:.2}; cached p50 {:.2}, rps {:.2}; cached / cold SDMX p50 {:.3}",
        s_cold.1.0 / g_cold.1.0,
        s_cold.2 / g_cold.2,
        s_hot.1.0 / g_hot.1.0,
        s_hot.2 / g_hot.2,
        s_hot.1.0 / s_cold.1.0
    );
    println!("({queries} sequential requests per row after 10 warm-up, then {seconds} s at {concurrency} concurrent; HTTP: one connection per request)");
    drop((cold, cached));
    drop(procs);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn import(rows: u64, file: &std::path::Path) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(file)?);
    writeln!(out, "DATAFLOW,REF_AREA,SEX,AGE,REGION,TIME_PERIOD,OBS_VALUE,OBS_STATUS,UNIT_MULT")?;
    let mut n = 0;
    'outer: for year in 1000.. {
        for month in 1..=12 {
            for flow in ["UNE_PERS", "LF_PERS", "POP_WA", "PES_JOBSEEKERS"] {
                for sex in ["T", "M", "F"] {
                    for age in ["Y_GE15", "Y15T24", "Y_GE25"] {
                        for region in ["_T", "MA-01", "MA-03", "MA-04", "MA-06"] {
                            if n == rows {
                                break 'outer;
                            }
                            writeln!(out, "ALO:{flow}(1.0),MAR,{sex},{age},{region},{year}-{month:02},{}.{},A,3", n % 9973, n % 10)?;
                            n += 1;
                        }
                    }
                }
            }
        }
    }
    out.flush()?;
    // On disk before timing starts, so that neither side pays for the
    // write-back of a file just generated.
    out.get_ref().sync_all()?;
    drop(out);
    let size = std::fs::metadata(file)?.len();
    let dir = tempfile::tempdir()?;
    let pki = Pki::init(dir.path())?;
    let node = NodeDir::create(dir.path(), &pki, "MAR", POLICY)?;
    let started = Instant::now();
    run_ok(node.command(&["import"]).arg(file))?;
    let took = started.elapsed().as_secs_f64();
    println!(
        "| tabadul-node import, {rows} observations ({:.0} MB SDMX-CSV), validated, sorted, one ingested SST | {took:.2} s | {:.0} obs/s |",
        size as f64 / 1e6,
        rows as f64 / took
    );
    Ok(())
}

/// A realistic leaf: a node's record of one answered hub query.
fn sample_entry(i: u64) -> tabadul_audit::Entry {
    let mut e = tabadul_audit::Entry::now("query", "spiffe://alo/hub/alo");
    e.query_digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &i.to_be_bytes()));
    e.decision = "allowed".into();
    e.rule_id = "hub-aggregates".into();
    e.policy_version = "mar-2026-11@3f9a0c2e1b7d".into();
    e.released = e.query_digest.clone();
    e.detail = format!("{} cells; allowed by rule hub-aggregates", i % 50);
    e
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map_or(0, |it| it.filter_map(|e| e.ok()).map(|e| if e.path().is_dir() { dir_bytes(&e.path()) } else { e.metadata().map_or(0, |m| m.len()) }).sum())
}

fn log_bench(entries: u64, concurrency: u64) -> Result<()> {
    use std::sync::Arc;
    use tabadul_audit::{Log, Signer, merkle};
    let per_thread = entries / concurrency;
    let total = per_thread * concurrency;
    let encoded: Arc<Vec<Vec<u8>>> = Arc::new((0..total).map(|i| sample_entry(i).encode()).collect());
    let avg = encoded.iter().map(Vec::len).sum::<usize>() as f64 / total as f64;
    println!("entries: {total}, {concurrency} appending threads, {avg:.0} bytes per entry");

    // Raw RocksDB: the same bytes, the same threads, each put a synced WriteBatch.
    let raw_dir = tempfile::tempdir()?;
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    let db = Arc::new(rocksdb::DB::open(&opts, raw_dir.path())?);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..concurrency {
            let (db, encoded) = (db.clone(), encoded.clone());
            s.spawn(move || {
                let mut sync = rocksdb::WriteOptions::default();
                sync.set_sync(true);
                for i in (t * per_thread)..((t + 1) * per_thread) {
                    let mut b = rocksdb::WriteBatch::default();
                    b.put(i.to_be_bytes(), &encoded[i as usize]);
                    db.write_opt(b, &sync).expect("raw write");
                }
            });
        }
    });
    let raw_rate = total as f64 / started.elapsed().as_secs_f64();
    drop(db);

    // The log: entries, subtree hashes, a signed checkpoint per batch.
    let log_dir = tempfile::tempdir()?;
    let log = Arc::new(Log::open(log_dir.path(), Signer::generate("alo/node/MAR")?)?);
    let started = Instant::now();
    let latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..concurrency)
            .map(|t| {
                let log = log.clone();
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(per_thread as usize);
                    for i in (t * per_thread)..((t + 1) * per_thread) {
                        let e = sample_entry(i);
                        let begun = Instant::now();
                        let a = log.append(&e, Some([7; 16])).expect("append");
                        // Acknowledged means: durable, under a signed checkpoint.
                        assert!(a.checkpoint.checkpoint.size > a.index);
                        lat.push(begun.elapsed());
                    }
                    lat
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("appender")).collect()
    });
    let log_rate = total as f64 / started.elapsed().as_secs_f64();
    let mut sorted = latencies;
    sorted.sort();
    let checkpoints = log.checkpoints(0, u64::MAX, usize::MAX)?.len();
    println!("| durable appends/s (batched, synced, checkpoint per batch) | {log_rate:.0} |");
    println!("| raw RocksDB synced WriteBatch puts/s, same bytes and threads | {raw_rate:.0} |");
    println!("| ratio log / raw | {:.2} |", log_rate / raw_rate);
    println!("| append to signed checkpoint p50 / p99 | {:.2} ms / {:.2} ms |", ms(percentile(&sorted, 0.5)), ms(percentile(&sorted, 0.99)));
    println!("| checkpoints published (at most one a second; every batch's is signed for its receipts) | {checkpoints} |");

    // Proofs from stored subtree hashes.
    let size = log.len();
    let n = 20_000u64;
    let started = Instant::now();
    let proofs: Vec<(u64, Vec<Vec<u8>>)> = (0..n)
        .map(|k| {
            let index = (k * 7919) % size;
            (index, log.inclusion_proof(index, size).expect("proof").iter().map(|h| h.to_vec()).collect())
        })
        .collect();
    let made = n as f64 / started.elapsed().as_secs_f64();
    let root = log.latest().checkpoint.root;
    let leaves: Vec<merkle::Hash> = (0..n).map(|k| log.leaf_hash((k * 7919) % size).expect("leaf")).collect();
    let started = Instant::now();
    for ((index, proof), leaf) in proofs.iter().zip(&leaves) {
        merkle::verify_inclusion(*index, size, leaf, proof, &root).expect("verifies");
    }
    let verified = n as f64 / started.elapsed().as_secs_f64();
    println!("| inclusion proofs made/s (tree of {size}) | {made:.0} |");
    println!("| inclusion proofs verified/s | {verified:.0} |");

    // Offline verify of everything, against hashing the same bytes.
    // As `fetch` does: the latest checkpoint must be among those verified.
    log.publish()?;
    let all = log.entries(0, size)?;
    let cps = log.checkpoints(0, u64::MAX, usize::MAX)?;
    let key = log.signer().verifier();
    drop(log);
    println!("| bytes stored per entry (RocksDB directory incl. WAL / entries) | {:.0} |", dir_bytes(log_dir.path()) as f64 / size as f64);
    let scratch = tempfile::tempdir()?;
    let info = tabadul_audit::offline::LogInfo { origin: "alo/node/MAR".into(), endpoint: String::new(), fetched_at: String::new(), size };
    tabadul_audit::offline::LogDir::write(scratch.path(), &info, &all, &cps, &[], None)?;
    let dir = tabadul_audit::offline::LogDir::load(scratch.path())?;
    // Best of three, as for the baseline below: the first pass also pays
    // for faulting the freshly loaded directory into memory.
    let mut verify_rate = 0f64;
    for _ in 0..3 {
        let started = Instant::now();
        let report = tabadul_audit::offline::verify(&dir, &key, None);
        verify_rate = verify_rate.max(size as f64 / started.elapsed().as_secs_f64());
        anyhow::ensure!(report.findings.is_empty(), "verify found {:?}", report.findings);
    }
    let mut acc = 0u8;
    let mut sha_rate = 0f64;
    for _ in 0..3 {
        let started = Instant::now();
        for e in &all {
            acc ^= ring::digest::digest(&ring::digest::SHA256, e).as_ref()[0];
        }
        sha_rate = sha_rate.max(size as f64 / started.elapsed().as_secs_f64());
    }
    // Where verify's time goes, one part at a time, on one core.
    let started = Instant::now();
    for e in &all {
        tabadul_audit::entry::check(e)?;
    }
    let check_rate = size as f64 / started.elapsed().as_secs_f64();
    let hashes: Vec<merkle::Hash> = all.iter().map(|e| merkle::leaf_hash(e)).collect();
    let started = Instant::now();
    let mut f = merkle::Frontier::default();
    for h in &hashes {
        f.push(*h, |_, _, _| {});
    }
    let tree_rate = size as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(f.root() == root, "tree mismatch");
    println!("| (parts, one core: canonical-form check {check_rate:.0}/s; tree from leaf hashes {tree_rate:.0}/s) | |");
    println!("| verify entries/s ({} checkpoints) | {verify_rate:.0} |", cps.len());
    println!("| bare SHA-256 of the same entries/s | {sha_rate:.0} (x{acc}) |");
    println!("| ratio verify / SHA-256 | {:.2} |", verify_rate / sha_rate);
    Ok(())
}

/// Peak resident memory of a process (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok()))
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn load(nodes: usize, concurrency: usize, seconds: u64, deadline_ms: u64, cache: bool, max_concurrent_queries: Option<usize>) -> Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir()?;
    let pki = Pki::init(dir.path())?;
    let mut procs = Vec::new();
    let mut members = Vec::new();
    for member in synthetic::members().into_iter().take(nodes) {
        let node = node(&dir.path().join("nodes"), &pki, member)?;
        let proc = node.start()?;
        members.push(HubMember::new(&pki, member, proc.addr.to_string())?);
        procs.push(proc);
    }
    let hub_cert = pki.issue("hub", "alo")?;
    let mut extra = max_concurrent_queries.map(|n| format!("max_concurrent_queries = {n}\n")).unwrap_or_default();
    if !cache {
        extra.push_str("[cache]\nmax_entries = 0\n");
    }
    let hub = start_hub_with(&dir.path().join("hub"), &pki, &hub_cert, &members, deadline_ms, &extra)?;
    let operator = pki.issue("operator", "analyst")?;
    // Several connections, as many operators would have.
    let clients: Vec<_> = (0..16).map(|_| hub_client(hub.addr, &pki.tls_files(&operator))).collect::<Result<_>>()?;
    let request = pb::FederatedQueryRequest {
        query: Some(pb::Query {
            dataflow: "UNE_RATE".into(),
            breakdown: vec!["SEX".into()],
            start_period: "2024".into(),
            end_period: "2024".into(),
            ..Default::default()
        }),
        deadline_ms: deadline_ms as u32,
        ..Default::default()
    };
    let (ok, failed, short) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let mut c = clients[i % clients.len()].clone();
            let (request, ok, failed, short) = (request.clone(), ok.clone(), failed.clone(), short.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    match c.federated_query(request.clone()).await {
                        Ok(r) => {
                            lat.push(t.elapsed());
                            ok.fetch_add(1, Ordering::Relaxed);
                            if r.into_inner().members.iter().any(|m| m.state != pb::MemberState::Answered as i32) {
                                short.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("failed: {:?}: {}", e.code(), e.message());
                            }
                        }
                    }
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let took = started.elapsed();
    lat.sort();
    let (ok, failed, short) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), short.load(Ordering::Relaxed));
    println!(
        "| {concurrency} concurrent federated queries over {nodes} nodes for {seconds} s (deadline {deadline_ms} ms, cache {}) | |",
        if cache { "on" } else { "off" }
    );
    println!("| completed / failed / completed with a member not answering | {ok} / {failed} / {short} |");
    println!("| federated queries/s | {:.1} |", ok as f64 / took.as_secs_f64());
    if !lat.is_empty() {
        println!(
            "| latency p50 / p99 / max | {:.0} ms / {:.0} ms / {:.0} ms |",
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            ms(*lat.last().unwrap_or(&Duration::ZERO))
        );
        println!("| last answer after the {seconds} s window closed | {:.1} s |", (took.as_secs_f64() - seconds as f64).max(0.0));
    }
    let node_rss: Vec<f64> = procs.iter().map(|p| peak_rss_mib(p.child.id())).collect();
    println!("| peak RSS hub | {:.0} MiB |", peak_rss_mib(hub.child.id()));
    println!(
        "| peak RSS per node (min / max) | {:.0} / {:.0} MiB |",
        node_rss.iter().copied().fold(f64::MAX, f64::min),
        node_rss.iter().copied().fold(0.0, f64::max)
    );
    Ok(())
}

const MICRO_POLICY: &str = r#"[[rule]]
id = "hub-js"
requester = "hub"
dataflows = ["PES_JOBSEEKER_RECORDS"]
breakdowns = ["SEX", "REGION", "OCU"]
statistics = ["count", "mean"]
variables = ["MONTHS_REGISTERED"]
disclosure = { cell_key = { d = 4, v = 2.0, js = 2 } }
"#;

const AUDIT_POLICY: &str = r#"[[rule]]
id = "hub-js"
requester = "hub"
dataflows = ["PES_JOBSEEKER_RECORDS"]
breakdowns = ["SEX", "AGE", "REGION", "OCU", "EDUCATION"]
statistics = ["count", "mean"]
variables = ["MONTHS_REGISTERED"]
disclosure = { cell_key = { d = 4, v = 2.0, js = 2 } }
"#;

async fn ledger_audit(records: usize, repeats: usize) -> Result<()> {
    use tabadul_tests::microdata::{self as md, OCUS, REGIONS};
    let dir = tempfile::tempdir()?;
    let pki = Pki::init(dir.path())?;
    let node = NodeDir::create(dir.path(), &pki, "MAR", AUDIT_POLICY)?;
    let csv = dir.path().join("js.csv");
    std::fs::write(&csv, md::to_csv(&md::jobseekers(records, 5)))?;
    run_ok(node.command(&["import", "--table", "PES_JOBSEEKER_RECORDS"]).arg(&csv))?;
    let proc = node.start()?;
    let hub = pki.issue("hub", "alo")?;
    let mut client = node_client(proc.addr, &pki.tls_files(&hub), "MAR")?;
    let query = |statistic: &str, breakdown: &[&str], filters: Vec<(&str, Vec<&str>)>| pb::Query {
        dataflow: "PES_JOBSEEKER_RECORDS".into(),
        breakdown: breakdown.iter().map(|s| s.to_string()).collect(),
        filters: filters.into_iter().map(|(d, c)| pb::DimensionFilter { dimension: d.into(), codes: c.into_iter().map(String::from).collect() }).collect(),
        aggregation: Some(pb::Aggregation {
            statistic: statistic.into(),
            variable: if statistic == "mean" { "MONTHS_REGISTERED".into() } else { String::new() },
            denominator: String::new(),
        }),
        ..Default::default()
    };
    // The probe: the benchmark's count + mean by region × ISCO × sex.
    let probe = |s: &str| query(s, &["REGION", "OCU", "SEX"], Vec::new());
    let mut rng = md::Rng::new(42);
    let mut released = 0usize;
    let mut baseline = None;
    println!("| earlier released cells | probe (count + mean), median of {repeats} | ratio to an empty ledger |");
    println!("|---|---|---|");
    for target in [0usize, 100, 1_000, 10_000] {
        // Random overlapping queries until the ledger holds `target` cells.
        while released < target {
            let pick = |codes: &[&'static str], rng: &mut md::Rng| -> Vec<&'static str> {
                let v: Vec<&str> = codes.iter().copied().filter(|_| rng.unit() < 0.5).collect();
                if v.is_empty() { vec![codes[0]] } else { v }
            };
            let dims = ["SEX", "AGE", "EDUCATION"];
            let breakdown: Vec<&str> = dims.iter().copied().filter(|_| rng.unit() < 0.5).collect();
            let filters = vec![("REGION", pick(&REGIONS, &mut rng)), ("OCU", pick(&OCUS, &mut rng))];
            let statistic = if rng.unit() < 0.5 { "count" } else { "mean" };
            let (_, cells) = tabadul_tests::collect(&mut client, query(statistic, &breakdown, filters)).await?;
            released += cells.iter().filter(|c| c.value.is_finite()).count().max(1);
        }
        let mut times = Vec::new();
        for _ in 0..repeats {
            let t = Instant::now();
            tabadul_tests::collect(&mut client, probe("count")).await?;
            tabadul_tests::collect(&mut client, probe("mean")).await?;
            times.push(t.elapsed());
        }
        times.sort();
        let median = times[times.len() / 2];
        let base = *baseline.get_or_insert(median);
        println!("| {released} | {:.1} ms | {:.2} |", ms(median), median.as_secs_f64() / base.as_secs_f64());
        // With RUST_LOG=tabadul_node=debug the node logs where the time went.
        for line in proc.log_text().lines().filter(|l| l.contains("microdata answer computed")).rev().take(2) {
            println!("  node: {line}");
        }
    }
    println!("| node peak RSS (VmHWM) | {:.0} MiB | |", peak_rss_mib(proc.child.id()));
    Ok(())
}

async fn microdata(records: usize, file: &std::path::Path, repeats: usize, median_out: Option<&std::path::Path>) -> Result<()> {
    use tabadul_tests::microdata as md;
    if !file.exists() {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(file)?);
        // In slices, so 10 M records never sit in memory twice.
        let mut written = 0;
        let mut seed = 1;
        while written < records {
            let n = (records - written).min(1_000_000);
            let slice = md::jobseekers(n, seed);
            let text = md::to_csv(&slice[..n]);
            let body = if written == 0 { &text[..] } else { &text[md::HEADER.len() + 1..] };
            out.write_all(body.as_bytes())?;
            written += n;
            seed += 1;
        }
        out.flush()?;
        out.get_ref().sync_all()?;
    }
    let size = std::fs::metadata(file)?.len();
    let dir = tempfile::tempdir()?;
    let pki = Pki::init(dir.path())?;
    let node = NodeDir::create(dir.path(), &pki, "MAR", MICRO_POLICY)?;
    let started = Instant::now();
    run_ok(node.command(&["import", "--table", "PES_JOBSEEKER_RECORDS"]).arg(file))?;
    let took = started.elapsed().as_secs_f64();
    println!(
        "| tabadul-node import, {records} job-seeker records ({:.0} MB CSV), validated, column chunks, one synced batch | {took:.2} s | {:.0} records/s |",
        size as f64 / 1e6,
        records as f64 / took
    );
    let proc = node.start()?;
    let hub = pki.issue("hub", "alo")?;
    let mut client = node_client(proc.addr, &pki.tls_files(&hub), "MAR")?;
    let q = |statistic: &str| pb::Query {
        dataflow: "PES_JOBSEEKER_RECORDS".into(),
        breakdown: vec!["REGION".into(), "OCU".into(), "SEX".into()],
        aggregation: Some(pb::Aggregation {
            statistic: statistic.into(),
            variable: if statistic == "mean" { "MONTHS_REGISTERED".into() } else { String::new() },
            denominator: String::new(),
        }),
        ..Default::default()
    };
    let mut pair = async || -> Result<(Duration, usize)> {
        let t = Instant::now();
        let (_, a) = tabadul_tests::collect(&mut client, q("count")).await?;
        let (_, b) = tabadul_tests::collect(&mut client, q("mean")).await?;
        Ok((t.elapsed(), a.len() + b.len()))
    };
    let (cold, cells) = pair().await?;
    let mut warm = Vec::new();
    for _ in 0..repeats {
        warm.push(pair().await?.0);
    }
    warm.sort();
    let median = warm[warm.len() / 2];
    println!("| count + mean by region × ISCO × sex ({cells} cells with margins), first (columns read from RocksDB) | {:.1} ms |", ms(cold));
    println!("| same, warm: median of {repeats} (min {:.1}, max {:.1}) | {:.1} ms |", ms(warm[0]), ms(warm[warm.len() - 1]), ms(median));
    println!("| node peak RSS (VmHWM) over import-free serving and these queries | {:.0} MiB |", peak_rss_mib(proc.child.id()));
    // With RUST_LOG=tabadul_node=debug the node logs where each answer's time went.
    for line in proc.log_text().lines().filter(|l| l.contains("microdata answer computed")).rev().take(2) {
        println!("  node: {line}");
    }
    if let Some(path) = median_out {
        std::fs::write(path, format!("{}", median.as_secs_f64()))?;
    }
    Ok(())
}

async fn slow_clients(slow: usize, addresses: usize, seconds: u64, hub_config: &str) -> Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use tabadul_tests::hostile::{self, Kind};
    let dir = tempfile::tempdir()?;
    let pki = Pki::init(dir.path())?;
    let hub_cert = pki.issue("hub", "alo")?;
    let extra = format!("[http]\nrate_per_minute = 1000000\nburst = 100000\n{hub_config}\n");
    let hub = start_hub_with(&dir.path().join("hub"), &pki, &hub_cert, &[], 5000, &extra)?;
    let front = hub.http.ok_or_else(|| anyhow::anyhow!("no front door"))?;
    let h1 = hostile::client_tls(&pki, None, &[b"http/1.1"])?;
    let h2 = hostile::client_tls(&pki, None, &[b"h2"])?;
    let stop = Arc::new(AtomicBool::new(false));
    let (cut, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // The kinds that hold a connection (a huge Content-Length is answered at
    // once, or never: it is in the tests, not here).
    let kinds = [Kind::SilentTls, Kind::H2PrefaceThenSilence, Kind::Slowloris, Kind::SlowBody];
    let tasks: Vec<_> = (0..slow)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            let from = hostile::source(i % addresses.max(1));
            let tls = Some(if kind == Kind::H2PrefaceThenSilence { h2.clone() } else { h1.clone() });
            let (stop, cut, refused) = (stop.clone(), cut.clone(), refused.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match hostile::hold(kind, from, front, tls.clone(), Duration::from_secs(2)).await {
                        // Turned away at once: an attacker would retry;
                        // a pause keeps the retry storm from measuring the
                        // bench's own CPU instead of the hub.
                        Ok(o) if o.held < Duration::from_millis(200) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Ok(_) => {
                            cut.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                    }
                }
            })
        })
        .collect();
    // Let them take their places.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let client = tabadul_tests::http::Client::tls(front, &pki.ca_cert(), None)?;
    let mut times = Vec::new();
    let mut failed = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        let c = client.clone();
        let t = Instant::now();
        // Ten seconds without an answer is a failure, as a browser would see it.
        let answer = tokio::time::timeout(Duration::from_secs(10), tokio::task::spawn_blocking(move || c.get("/sdmx/dataflow", &[]))).await;
        match answer {
            Ok(Ok(Ok(a))) if a.status == 200 => times.push(t.elapsed()),
            _ => failed += 1,
        }
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in &tasks {
        t.abort();
    }
    times.sort();
    println!("| honest client, GET /sdmx/dataflow over HTTPS, while {slow} slow clients from {addresses} address(es) hold connections for {seconds} s | |");
    println!("| answers/s | {:.1} |", times.len() as f64 / took.as_secs_f64());
    println!("| failed (no answer within 10 s) | {failed} |");
    if !times.is_empty() {
        println!("| p50 / p99 | {:.1} ms / {:.1} ms |", ms(percentile(&times, 0.5)), ms(percentile(&times, 0.99)));
    }
    println!("| slow connections cut by the hub / turned away at once | {} / {} |", cut.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    println!("| peak RSS hub | {:.0} MiB |", peak_rss_mib(hub.child.id()));
    Ok(())
}
