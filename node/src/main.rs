//! `tabadul-node`: run a country node and administer it.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tabadul_certs::Identity;
use tabadul_node::import::{self, Format};
use tabadul_node::policy::Policy;
use tabadul_node::store::Store;
use tabadul_node::{NodeConfig, admin, query};
use tabadul_proto::{Dictionary, pb};

#[derive(Parser)]
#[command(name = "tabadul-node", version, about = "A Tabadul country node")]
struct Cli {
    /// The node's configuration file.
    #[arg(long, short, global = true, default_value = "node.toml", env = "TABADUL_NODE_CONFIG")]
    config: PathBuf,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Node gRPC service over mutual TLS.
    Serve {
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: String,
        /// Write the bound address to this file once serving (and the
        /// metrics address to <file>.metrics).
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Serve Prometheus metrics (plain HTTP, GET /metrics) here.
        #[arg(long)]
        metrics_listen: Option<String>,
    },
    /// Import SDMX-CSV or ILOSTAT CSV files, or unit records into a
    /// microdata table (--table), all or nothing.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// sdmx-csv or ilostat; by default detected from each header.
        #[arg(long)]
        format: Option<Format>,
        /// The microdata table the files' records belong to.
        #[arg(long, conflicts_with = "format")]
        table: Option<String>,
        /// Only validate the files (every problem reported); store nothing.
        #[arg(long)]
        check: bool,
    },
    /// Take a dataflow (or some of its series) out of circulation now.
    Withdraw {
        #[arg(long)]
        dataflow: String,
        /// SDMX series key without TIME_PERIOD, e.g. MAR.F.. (empty parts match any code).
        #[arg(long, default_value = "")]
        series: String,
        #[arg(long)]
        reason: String,
    },
    /// Lift a withdrawal.
    Reinstate {
        #[arg(long)]
        dataflow: String,
        #[arg(long, default_value = "")]
        series: String,
    },
    /// What the node holds and which policy is in force.
    Status,
    /// Check certificate, CRL, dictionary, policy, keys and the running
    /// server; exit 1 when something is wrong.
    Doctor,
    /// Take an online backup (store and signed log) into a new directory.
    Backup {
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into this node's data directory (node stopped).
    /// The data it replaces is moved aside, never deleted.
    Restore {
        #[arg(long)]
        from: PathBuf,
    },
    /// Check or explain the publication policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Ask another member's node, as this node (the node must be running):
    /// e.g. a destination's work permits for our own nationals. The answer
    /// is accepted only with that node's receipt, and logged here too.
    Ask {
        #[command(flatten)]
        peer: PeerArgs,
        #[command(flatten)]
        what: QueryShape,
        /// count, weighted-count, sum, mean or ratio (microdata tables).
        #[arg(long)]
        statistic: Option<String>,
        #[arg(long, default_value = "")]
        variable: String,
    },
    /// Mirror statistics of a migration corridor, for this node's own team:
    /// our placements in the destination (our own figures) beside its
    /// permits, visas and stock of our nationals, asked of its node as in
    /// `ask` (under its rules, with its receipts, logged on both sides).
    Corridor {
        /// The destination.
        #[command(flatten)]
        peer: PeerArgs,
        /// START:END, either may be empty.
        #[arg(long)]
        period: Option<String>,
    },
    /// The signed network directory (`[directory]` in node.toml).
    Directory {
        #[command(subcommand)]
        command: DirectoryCommand,
    },
}

#[derive(Subcommand)]
enum DirectoryCommand {
    /// Fetch the latest directory and its dictionary from the hub; keep
    /// them if the directory is signed by the anchor and follows the
    /// versions held. Exit 1 when refused, or when this node's dictionary
    /// is not the one the directory names (the node will not start with it).
    Fetch,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate the policy file against the dictionary.
    Check,
    /// Show the decision for a query without a running server.
    Explain {
        #[command(flatten)]
        ask: QueryArgs,
    },
    /// Show what a query would release, suppress or perturb, computed on
    /// this node's data and release ledger, under the policy in force or a
    /// candidate policy file; nothing is recorded.
    Preview {
        #[command(flatten)]
        ask: QueryArgs,
        /// count, weighted-count, sum, mean or ratio (microdata).
        #[arg(long, default_value = "count")]
        statistic: String,
        #[arg(long, default_value = "")]
        variable: String,
        #[arg(long, default_value = "")]
        denominator: String,
        /// A candidate policy file to try instead of the one in force.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
}

/// Who asks what: the arguments `policy explain` and `policy preview` share.
#[derive(clap::Args)]
struct QueryArgs {
    /// The requester's identity, e.g. spiffe://alo/hub/alo.
    #[arg(long = "as")]
    requester: Identity,
    #[command(flatten)]
    what: QueryShape,
}

impl QueryArgs {
    fn query(self) -> anyhow::Result<(Identity, pb::Query)> {
        Ok((self.requester, self.what.query()?))
    }
}

/// Another member's node, as `ask` and `corridor` reach it.
#[derive(clap::Args)]
struct PeerArgs {
    /// The member asked (ISO 3166-1 alpha-3).
    #[arg(long)]
    member: String,
    /// Its node's address, host:port.
    #[arg(long)]
    endpoint: String,
    /// Its log verifier key, or @FILE holding it.
    #[arg(long)]
    log_vkey: String,
}

/// What a query asks: `policy explain`, `policy preview` and `ask`.
#[derive(clap::Args)]
struct QueryShape {
    #[arg(long)]
    dataflow: String,
    /// Dimensions to break down by (comma-separated).
    #[arg(long, value_delimiter = ',')]
    breakdown: Vec<String>,
    /// DIM=CODE[+CODE...], repeatable.
    #[arg(long = "filter")]
    filters: Vec<String>,
    /// START:END, either may be empty.
    #[arg(long)]
    period: Option<String>,
}

impl QueryShape {
    fn query(self) -> anyhow::Result<pb::Query> {
        tabadul_proto::query_from_args(self.dataflow, self.breakdown, &self.filters, self.period.as_deref()).map_err(anyhow::Error::msg)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    match cli.command {
        Command::Serve { listen, ready_file, metrics_listen } => {
            let config = load_config(&cli.config)?;
            let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
            let addr = listener.local_addr()?;
            let metrics = match &metrics_listen {
                Some(a) => Some(tokio::net::TcpListener::bind(a).await.with_context(|| format!("binding {a}"))?),
                None => None,
            };
            let metrics_addr = metrics.as_ref().map(|l| l.local_addr()).transpose()?;
            let ready = move || {
                if let Some(path) = ready_file {
                    // The metrics address first: the main ready file is what
                    // callers wait for.
                    let mut files = metrics_addr.map(|a| (path.with_extension("metrics"), a)).into_iter().collect::<Vec<_>>();
                    files.push((path, addr));
                    for (path, addr) in files {
                        if let Err(e) = write_ready_file(&path, addr) {
                            tracing::error!(path = %path.display(), error = %e, "cannot write the ready file");
                        }
                    }
                }
            };
            tabadul_node::run_notify(listener, metrics, config, shutdown_signal(), ready).await?;
        }
        Command::Import { files, format, table, check: true } => {
            let config = load_config(&cli.config)?;
            let dict = Dictionary::load(&config.dictionary)?;
            let member = config.tls.own_identity()?.id().to_owned();
            for file in &files {
                let n = match &table {
                    Some(t) => tabadul_node::microdata::check_records(&dict, t, file)?,
                    None => import::check(&dict, &member, &[(file.clone(), format)])?,
                };
                let what = if table.is_some() { "records" } else { "observations" };
                println!("{}: {n} {what}, all valid (checked only: nothing was stored)", file.display());
            }
        }
        Command::Import { files, format: _, table: Some(table), check: false } => {
            let config = load_config(&cli.config)?;
            if let Some(mut client) = admin::connect(&config.admin_socket()).await {
                for file in &files {
                    let path = std::fs::canonicalize(file).with_context(|| format!("{}", file.display()))?;
                    let r = client
                        .import(pb::ImportRequest { path: path.display().to_string(), format: String::new(), table: table.clone() })
                        .await
                        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                        .into_inner();
                    println!("{}: {} records imported into {table} by the running node", file.display(), r.observations);
                }
            } else {
                let dict = Dictionary::load(&config.dictionary)?;
                let store = Store::open(&config.store_dir())?;
                for file in &files {
                    let bar = progress_bar(std::fs::metadata(file).map(|m| m.len()).unwrap_or(0));
                    let report = tabadul_node::microdata::import_records(&store, &dict, &table, file, &bar);
                    bar.finish_and_clear();
                    let report = report?;
                    println!(
                        "{}: {} records imported into {} ({} in all); validated in {:.2} s, stored in {:.2} s",
                        file.display(),
                        report.records,
                        report.table,
                        report.total,
                        report.validate_time.as_secs_f64(),
                        report.write_time.as_secs_f64(),
                    );
                }
            }
        }
        Command::Import { files, format, table: None, check: false } => {
            let config = load_config(&cli.config)?;
            if let Some(mut client) = admin::connect(&config.admin_socket()).await {
                let mut total = 0;
                for file in &files {
                    let path = std::fs::canonicalize(file).with_context(|| format!("{}", file.display()))?;
                    let r = client
                        .import(pb::ImportRequest {
                            path: path.display().to_string(),
                            format: format
                                .map(|f| {
                                    match f {
                                        Format::SdmxCsv => "sdmx-csv",
                                        Format::Ilostat => "ilostat",
                                    }
                                    .into()
                                })
                                .unwrap_or_default(),
                            table: String::new(),
                        })
                        .await
                        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                        .into_inner();
                    total += r.observations;
                    println!("{}: {} observations ({}) imported by the running node", file.display(), r.observations, r.dataflows.join(", "));
                }
                println!("{total} observations imported");
            } else {
                let dict = Dictionary::load(&config.dictionary)?;
                let member = config.tls.own_identity()?.id().to_owned();
                let store = Store::open(&config.store_dir())?;
                let total: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
                let bar = progress_bar(total);
                let inputs: Vec<_> = files.iter().map(|f| (f.clone(), format)).collect();
                let report = import::import(&store, &dict, &member, &inputs, &bar);
                bar.finish_and_clear();
                let report = report?;
                println!(
                    "{} observations imported into {} ({}); validated in {:.2} s, stored in {:.2} s",
                    report.observations,
                    member,
                    report.dataflows.into_iter().collect::<Vec<_>>().join(", "),
                    report.validate_time.as_secs_f64(),
                    report.write_time.as_secs_f64(),
                );
            }
        }
        Command::Withdraw { dataflow, series, reason } => {
            let config = load_config(&cli.config)?;
            let mut client = running(&config).await?;
            let r = client.withdraw(pb::WithdrawRequest { dataflow, series_key: series, reason }).await.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
            println!("withdrawn: {} (effective for the next query)", r.into_inner().id);
        }
        Command::Reinstate { dataflow, series } => {
            let config = load_config(&cli.config)?;
            let mut client = running(&config).await?;
            let r = client
                .reinstate(pb::ReinstateRequest { dataflow: dataflow.clone(), series_key: series })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
            if r.into_inner().removed { println!("reinstated {dataflow}") } else { println!("{dataflow} was not withdrawn") }
        }
        Command::Doctor => {
            let config = load_config(&cli.config)?;
            let (report, problems) = tabadul_certs::checkup::render(&tabadul_node::doctor::run(&config).await);
            print!("{report}");
            if problems > 0 {
                std::process::exit(1);
            }
        }
        Command::Status => {
            let config = load_config(&cli.config)?;
            let mut client = running(&config).await?;
            let s = client.status(pb::StatusRequest {}).await.map_err(|s| anyhow::anyhow!("{}", s.message()))?.into_inner();
            println!("member        {}", s.member);
            println!("policy        {}", s.policy_version);
            println!("dictionary    {}", s.dictionary_version);
            println!("observations  {}", s.observations);
            for m in &s.microdata {
                println!("microdata     {m}");
            }
            println!("log entries   {}", s.events);
            println!("log key       {}", s.log_vkey);
            if let Ok(cp) = tabadul_audit::offline::peek(&s.log_checkpoint) {
                println!("checkpoint    size {}, root {}", cp.size, hex::encode(cp.root));
            }
            if let Ok(cp) = tabadul_audit::offline::peek(&s.witnessed) {
                println!("witnessed     {} at size {}", cp.origin, cp.size);
            }
            for w in s.withdrawals {
                println!("withdrawn     {w}");
            }
        }
        Command::Directory { command: DirectoryCommand::Fetch } => {
            let config = load_config(&cli.config)?;
            let f = tokio::task::spawn_blocking(move || tabadul_node::directory::fetch(&config)).await??;
            println!(
                "directory version {} ({}; {} members); its dictionary is at {}",
                f.version,
                if f.new { "new" } else { "unchanged" },
                f.members,
                f.dictionary.display()
            );
            if !f.dictionary_in_use {
                bail!(
                    "this node's dictionary is not the one directory version {} names: install {} as the node's dictionary; the node refuses to start until then",
                    f.version,
                    f.dictionary.display()
                );
            }
        }
        Command::Backup { out } => {
            let config = load_config(&cli.config)?;
            let out = std::path::absolute(&out).with_context(|| format!("resolving {}", out.display()))?;
            let (observations, entries) = match admin::connect(&config.admin_socket()).await {
                Some(mut client) => {
                    let r = client
                        .backup(pb::BackupRequest { path: out.display().to_string() })
                        .await
                        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                        .into_inner();
                    (r.observations, r.log_entries)
                }
                None => {
                    let member = config.tls.own_identity()?.id().to_owned();
                    let store = tabadul_node::store::Store::open(&config.store_dir())?;
                    let log = tabadul_audit::Log::open(&config.log_dir(), tabadul_audit::load_signer(&config.log_key)?)?;
                    let m = tabadul_node::backup::backup(&member, &store, &log, &out)?;
                    (m.observations, m.log_entries)
                }
            };
            println!("backup in {}: {observations} observations, {entries} log entries", out.display());
        }
        Command::Restore { from } => {
            let config = load_config(&cli.config)?;
            if admin::connect(&config.admin_socket()).await.is_some() {
                bail!("the node is running (its admin socket answers): stop it before restoring");
            }
            let member = config.tls.own_identity()?.id().to_owned();
            let (m, moved) = tabadul_node::backup::restore(&config, &member, &from)?;
            println!("restored the backup of {} taken {}: {} observations, {} log entries", m.member, m.created, m.observations, m.log_entries);
            if let Some(dir) = moved {
                println!("the data it replaced is in {}", dir.display());
            }
            println!("the log now ends at the backup: the hub will refuse this node's answers until the ALO accepts the rollback (tabadul-hub unpin)");
        }
        Command::Policy(PolicyCommand::Check) => {
            let config = load_config(&cli.config)?;
            let dict = Dictionary::load(&config.dictionary)?;
            let policy = Policy::load(&config.policy, &dict)?;
            println!("{}: valid, version {}, {} rules", config.policy.display(), policy.version, policy.rules.len());
        }
        Command::Policy(PolicyCommand::Preview { ask, statistic, variable, denominator, policy }) => {
            let config = load_config(&cli.config)?;
            let (who, mut q) = ask.query()?;
            let requester = who.to_string();
            q.aggregation = Some(pb::Aggregation { statistic, variable, denominator });
            let candidate = match &policy {
                Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
                None => String::new(),
            };
            let (decision, cells) = if let Some(mut client) = admin::connect(&config.admin_socket()).await {
                let r = client
                    .preview(pb::PreviewRequest { query: Some(q), requester: requester.clone(), policy: candidate })
                    .await
                    .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                    .into_inner();
                (r.decision.unwrap_or_default(), r.cells)
            } else {
                let dict = Dictionary::load(&config.dictionary)?;
                let policy = match &policy {
                    Some(p) => Policy::load(p, &dict)?,
                    None => Policy::load(&config.policy, &dict)?,
                };
                let member = config.tls.own_identity()?.id().to_owned();
                let store = Store::open(&config.store_dir())?;
                let withdrawals = store.withdrawals()?;
                let today = time::OffsetDateTime::now_utc().date();
                let a = if dict.microdata(&q.dataflow).is_some() {
                    tabadul_node::micro_query::answer(
                        &store,
                        &dict,
                        &member,
                        &policy,
                        &withdrawals,
                        &who,
                        &q,
                        today,
                        tabadul_node::micro_query::Detail::Owner,
                        None,
                    )??
                    .answer
                } else {
                    query::answer(Some(&store), &dict, &policy, &withdrawals, &who, &q, today)??
                };
                (a.decision, a.cells)
            };
            print_preview(&requester, &decision, &cells);
        }
        Command::Corridor { peer: PeerArgs { member, endpoint, log_vkey }, period } => {
            let config = load_config(&cli.config)?;
            let log_vkey = vkey_arg(log_vkey)?;
            let ours = config.tls.own_identity()?.id().to_owned();
            let mut client = running(&config).await?;
            let q = |flow: &str, dim: &str, code: &str| tabadul_proto::query_from_args(flow.into(), Vec::new(), &[format!("{dim}={code}")], period.as_deref());
            let placed = client
                .own(q("MIG_PLACED_ABROAD", "DESTINATION", &member).map_err(anyhow::Error::msg)?)
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            let mut sides =
                vec![Side { title: format!("placed in {member} (ours)"), state: "ours".into(), note: String::new(), values: by_period(&placed.cells, &ours) }];
            for (title, flow) in [("permits", "WP_ISSUED"), ("visas", "WP_VISAS"), ("stock", "MIG_STOCK")] {
                let ask = pb::AskRequest {
                    member: member.clone(),
                    endpoint: endpoint.clone(),
                    log_vkey: log_vkey.clone(),
                    query: Some(q(flow, "NATIONALITY", &ours).map_err(anyhow::Error::msg)?),
                };
                let side = match client.ask(ask).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        let d = r.decision.unwrap_or_default();
                        let state = tabadul_proto::decision_word(d.kind).to_owned();
                        let note = if d.kind == pb::DecisionKind::Refused as i32 {
                            d.reason.clone()
                        } else {
                            format!("rule {}, {member}'s leaf {}, ours {}", d.rule_id, r.their_leaf, r.our_leaf)
                        };
                        Side { title: format!("{title} ({member}, {flow})"), state, note, values: by_period(&r.cells, &member) }
                    }
                    Err(s) => {
                        Side { title: format!("{title} ({member}, {flow})"), state: "failed".into(), note: s.message().to_owned(), values: Default::default() }
                    }
                };
                sides.push(side);
            }
            print_corridor(&ours, &member, &sides);
        }
        Command::Ask { peer: PeerArgs { member, endpoint, log_vkey }, what, statistic, variable } => {
            let config = load_config(&cli.config)?;
            let log_vkey = vkey_arg(log_vkey)?;
            let mut q = what.query()?;
            if let Some(statistic) = statistic {
                q.aggregation = Some(pb::Aggregation { statistic, variable, denominator: String::new() });
            }
            let mut client = running(&config).await?;
            let r = client
                .ask(pb::AskRequest { member: member.clone(), endpoint, log_vkey, query: Some(q) })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            let d = r.decision.unwrap_or_default();
            print_preview(&format!("this node, answered by {member}"), &d, &r.cells);
            println!();
            println!("  logged  {member}'s leaf {}, ours {} (kind peer-query)", r.their_leaf, r.our_leaf);
        }
        Command::Policy(PolicyCommand::Explain { ask }) => {
            let config = load_config(&cli.config)?;
            let dict = Dictionary::load(&config.dictionary)?;
            let policy = Policy::load(&config.policy, &dict)?;
            let (requester, q) = ask.query()?;
            if let Some(table) = dict.microdata(&q.dataflow) {
                explain_microdata(&policy, &requester, table, &q);
                return Ok(());
            }
            let today = time::OffsetDateTime::now_utc().date();
            let answer = query::answer(None, &dict, &policy, &[], &requester, &q, today)??;
            let d = answer.decision;
            let kind = match pb::DecisionKind::try_from(d.kind) {
                Ok(pb::DecisionKind::Refused) => "REFUSED",
                _ => "ALLOWED",
            };
            println!("{kind} for {requester}");
            println!("  rule    {}", if d.rule_id.is_empty() { "(none: default deny)" } else { &d.rule_id });
            println!("  policy  {}", d.policy_version);
            println!("  reason  {}", d.reason.replace("; no data matches", ""));
            if matches!(pb::DecisionKind::try_from(d.kind), Ok(pb::DecisionKind::Allowed | pb::DecisionKind::PartlyAllowed))
                && let Some(rule) = policy.rules.iter().find(|r| r.id == d.rule_id)
            {
                let range = format!("{}..{}", rule.start_period.as_deref().unwrap_or(""), rule.end_period.as_deref().unwrap_or(""));
                println!("  periods {range}");
                for rows in rule.rows_text(Some(&requester)) {
                    println!("  rows    {rows} only");
                }
                for e in &rule.embargoes {
                    println!("  embargo {} until {}", e.period, e.until);
                }
                println!("  (withdrawals by the national team apply on top of this at query time)");
            }
        }
    }
    Ok(())
}

/// Written atomically, so a reader never sees half an address.
fn write_ready_file(path: &std::path::Path, addr: std::net::SocketAddr) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, addr.to_string())?;
    std::fs::rename(&tmp, path)
}

fn load_config(path: &std::path::Path) -> anyhow::Result<NodeConfig> {
    NodeConfig::load(path).with_context(|| "loading the node configuration (use --config)")
}

async fn running(config: &NodeConfig) -> anyhow::Result<pb::node_admin_client::NodeAdminClient<tonic::transport::Channel>> {
    match admin::connect(&config.admin_socket()).await {
        Some(c) => Ok(c),
        None => bail!("no node is running with data directory {} (its admin socket is absent)", config.data_dir.display()),
    }
}

/// `policy explain` for a microdata table: the rule, what it grants, and
/// the disclosure control it applies (the figures need `policy preview`).
fn explain_microdata(policy: &Policy, requester: &Identity, table: &tabadul_proto::MicroTable, q: &pb::Query) {
    let released: std::collections::BTreeSet<String> = q
        .breakdown
        .iter()
        .chain(q.filters.iter().map(|f| &f.dimension))
        .filter(|d| d.as_str() != tabadul_proto::REF_AREA && d.as_str() != tabadul_proto::TIME_PERIOD)
        .cloned()
        .collect();
    match policy.decide_id(requester, &table.id, &released) {
        tabadul_node::policy::Grant::Refused { rule_id, reason } => {
            println!("REFUSED for {requester}");
            println!("  rule    {}", if rule_id.is_empty() { "(none: default deny)" } else { &rule_id });
            println!("  reason  {reason}");
        }
        tabadul_node::policy::Grant::Allowed(rule) => {
            println!("ALLOWED for {requester}: aggregates of {} (unit records never leave)", table.id);
            println!("  rule        {}", rule.id);
            println!("  policy      {}", policy.version);
            let stats = if rule.statistics.is_empty() { "count".to_owned() } else { rule.statistics.join(", ") };
            println!("  statistics  {stats}");
            if !rule.variables.is_empty() {
                println!("  variables   {}", rule.variables.join(", "));
            }
            for rows in rule.rows_text(Some(requester)) {
                println!("  rows        {rows} only");
            }
            if let Some(p) = policy.disclosure_params(&rule.id, &table.id) {
                println!("  threshold   {} contributors per cell", p.threshold);
                if let Some((n, k)) = p.dominance {
                    println!("  dominance   ({n},{k}) rule on magnitudes");
                }
                if let Some(pp) = p.p_percent {
                    println!("  p%          {pp}");
                }
                if let Some((size, share)) = p.group {
                    println!("  group rule  groups of at most {size}, one category at {:.0}% or more", share * 100.0);
                }
                println!("  secondary   against everything released to this requester before (release ledger)");
                match (&p.cell_key, p.dp) {
                    (_, Some((eps, budget))) => println!("  noise       differential privacy, ε {eps} per query, budget {budget}"),
                    (Some((t, m)), None) => println!("  noise       cell key: d {}, V {}, js {}, magnitudes {m}", t.params.d, t.params.v, t.params.js),
                    (None, None) => println!("  noise       none"),
                }
            }
            println!("  (run `policy preview` to see which cells this would release)");
        }
    }
}

/// A vkey given on the command line, or `@FILE`.
fn vkey_arg(arg: String) -> anyhow::Result<String> {
    match arg.strip_prefix('@') {
        Some(path) => Ok(std::fs::read_to_string(path).with_context(|| format!("reading the log vkey from {path}"))?.trim().to_owned()),
        None => Ok(arg),
    }
}

/// One column of a corridor table.
struct Side {
    title: String,
    /// `ours`, or the other node's decision word, or `failed`.
    state: String,
    note: String,
    values: std::collections::BTreeMap<String, f64>,
}

/// `member`'s totals by period (unit multiplier applied).
fn by_period(cells: &[pb::Cell], member: &str) -> std::collections::BTreeMap<String, f64> {
    cells
        .iter()
        .filter(|c| c.key.first().map(String::as_str) == Some(member) && c.value.is_finite())
        .filter_map(|c| Some((c.key.last()?.clone(), c.value * 10f64.powi(c.unit_mult))))
        .collect()
}

/// The corridor table: each side's state, then one row per period with
/// the asymmetries of permits and visas against our placements. A refused
/// side reads "refused", never 0.
fn print_corridor(ours: &str, member: &str, sides: &[Side]) {
    println!("Corridor {ours} → {member}");
    for s in sides {
        println!("  {:<40} {:<15} {}", s.title, s.state, s.note);
    }
    let periods: std::collections::BTreeSet<&String> = sides.iter().flat_map(|s| s.values.keys()).collect();
    println!();
    println!("  period  {:>12}  {:>12}  {:>12}  {:>12}  {:>14}  {:>14}", "placed", "permits", "visas", "stock", "asym permits", "asym visas");
    for p in periods {
        let cell = |s: &Side| match s.values.get(p) {
            Some(v) => format!("{v:.0}"),
            None if s.state == "refused" || s.state == "failed" => s.state.clone(),
            None => "—".into(),
        };
        let asym = |i: usize| {
            sides[0]
                .values
                .get(p)
                .zip(sides[i].values.get(p))
                .and_then(|(a, b)| tabadul_proto::mirror_asymmetry(*a, *b))
                .map_or("—".to_owned(), |v| format!("{v:.3}"))
        };
        println!(
            "  {p:<6}  {:>12}  {:>12}  {:>12}  {:>12}  {:>14}  {:>14}",
            cell(&sides[0]),
            cell(&sides[1]),
            cell(&sides[2]),
            cell(&sides[3]),
            asym(1),
            asym(2)
        );
    }
}

/// Prints a preview: the decision, then each cell with what disclosure
/// control did to it.
fn print_preview(requester: &str, d: &pb::Decision, cells: &[pb::Cell]) {
    let kind = tabadul_proto::decision_word(d.kind).to_uppercase();
    println!("{kind} for {requester}");
    println!("  rule    {}", if d.rule_id.is_empty() { "(none: default deny)" } else { &d.rule_id });
    println!("  policy  {}", d.policy_version);
    println!("  reason  {}", d.reason);
    for r in &d.rules_fired {
        println!("  fired   {r}");
    }
    if cells.is_empty() {
        return;
    }
    println!();
    println!("  {}  value  status  rules", d.dimensions.join("  "));
    let (mut released, mut perturbed, mut withheld) = (0, 0, 0);
    for c in cells {
        let value = if c.conf_status == "C" || c.conf_status == "D" {
            withheld += 1;
            "withheld".to_owned()
        } else {
            released += 1;
            if !c.flags.is_empty() {
                perturbed += 1;
            }
            if c.value.is_nan() { "(no value)".to_owned() } else { format!("{}", (c.value * 1000.0).round() / 1000.0) }
        };
        let status = match c.conf_status.as_str() {
            "C" => "C primary",
            "D" => "D secondary",
            _ if !c.flags.is_empty() => "perturbed",
            _ => "released",
        };
        println!("  {}  {value}  {status}  {}", c.key.join("  "), c.flags.join(","));
    }
    println!();
    println!("  {released} released ({perturbed} perturbed), {withheld} withheld");
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("validating {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json { builder.json().init() } else { builder.init() }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => {}
    }
}
