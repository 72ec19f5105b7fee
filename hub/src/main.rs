//! `tabadul-hub`: run the ALO hub, and query it as an operator.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;
use tabadul_certs::Role;
use tabadul_certs::tls::{self, Expect, TlsFiles};
use tabadul_hub::HubConfig;
use tabadul_hub::server::state_word;
use tabadul_proto::pb;

#[derive(Parser)]
#[command(name = "tabadul-hub", version, about = "The ALO hub of a Tabadul network")]
struct Cli {
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve the operator API over mutual TLS.
    Serve {
        #[arg(long, short, default_value = "hub.toml", env = "TABADUL_HUB_CONFIG")]
        config: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        /// Write the bound address to this file once serving (and the
        /// metrics address to <file>.metrics).
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Serve Prometheus metrics (plain HTTP, GET /metrics) here.
        #[arg(long)]
        metrics_listen: Option<String>,
        /// Serve the HTTP front door (SDMX REST, JSON API, dashboard) here;
        /// its address goes to <ready file>.http.
        #[arg(long)]
        http_listen: Option<String>,
    },
    /// Issue, revoke and list operator tokens for the HTTP front door. The
    /// running hub picks changes up at once (and logs them).
    Token {
        #[arg(long, short, default_value = "hub.toml", env = "TABADUL_HUB_CONFIG")]
        config: PathBuf,
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Forget the pin of a member's log, accepting that it rolled back (after
    /// the member restored a backup). The hub must be stopped; the decision
    /// is itself logged, with the pin that was dropped.
    Unpin {
        #[arg(long, short, default_value = "hub.toml", env = "TABADUL_HUB_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        member: String,
        /// Why, for the log: a ticket, a name.
        #[arg(long)]
        reason: String,
    },
    /// Check the certificate, CRL, log key and every member (connection,
    /// identity, health, log key, clock); exit 1 when something is wrong.
    Doctor {
        #[arg(long, short, default_value = "hub.toml", env = "TABADUL_HUB_CONFIG")]
        config: PathBuf,
    },
    /// Run a federated query (operator certificate) and print the table.
    Query {
        /// The hub's address, host:port.
        #[arg(long, env = "TABADUL_HUB")]
        hub: String,
        #[arg(long, env = "TABADUL_CA")]
        ca: PathBuf,
        #[arg(long, env = "TABADUL_CERT")]
        cert: PathBuf,
        #[arg(long, env = "TABADUL_KEY")]
        key: PathBuf,
        #[arg(long, env = "TABADUL_CRL")]
        crl: Option<PathBuf>,
        #[arg(long)]
        dataflow: String,
        /// Dimensions to break down by (comma-separated).
        #[arg(long, value_delimiter = ',')]
        breakdown: Vec<String>,
        /// DIM=CODE[+CODE...], repeatable.
        #[arg(long = "filter")]
        filters: Vec<String>,
        /// START:END (either may be empty), or one period.
        #[arg(long)]
        period: Option<String>,
        /// Member codes to ask (comma-separated); all by default.
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
        /// Also compute the regional aggregate.
        #[arg(long)]
        aggregate: bool,
        /// Per-member deadline in milliseconds (hub default when absent).
        #[arg(long)]
        deadline_ms: Option<u32>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// For a microdata table: count, weighted-count, sum, mean or ratio.
        #[arg(long)]
        statistic: Option<String>,
        /// The variable of a sum, mean or ratio.
        #[arg(long, default_value = "")]
        variable: String,
        /// The denominator variable of a ratio.
        #[arg(long, default_value = "")]
        denominator: String,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Issue a token for an operator; it is printed once and never stored.
    Issue {
        #[arg(long)]
        name: String,
        /// How long it works: 90d, 12h, 30m (default 90d, at most 400d).
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// Revoke an operator's live tokens (by operator name) or one token (by
    /// its id, to finish a rotation).
    Revoke {
        #[arg(long)]
        name: String,
    },
    /// List the tokens (names, ids, dates; never the tokens themselves).
    List,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    match cli.command {
        Command::Token { config, action } => {
            let config = HubConfig::load(&config).context("loading the hub configuration (use --config)")?;
            let path = &config.http.tokens;
            match action {
                TokenAction::Issue { name, expires_in } => {
                    let lifetime = expires_in.as_deref().map(tabadul_hub::tokens::parse_lifetime).transpose()?;
                    let (token, record) = tabadul_hub::tokens::issue(path, &name, lifetime)?;
                    eprintln!(
                        "issued token {} for {}, expires {}; it is shown once, keep it secret:",
                        record.id,
                        record.name,
                        record.expires.as_deref().unwrap_or("never")
                    );
                    println!("{token}");
                }
                TokenAction::Revoke { name } => {
                    let n = tabadul_hub::tokens::revoke(path, &name)?;
                    println!("revoked {n} token(s) of {name}");
                }
                TokenAction::List => {
                    let now = time::OffsetDateTime::now_utc();
                    for t in tabadul_hub::tokens::list(path)? {
                        println!("{}  {:<24} created {}  {}", t.id, t.name, t.created, t.describe(now));
                    }
                }
            }
        }
        Command::Serve { config, listen, ready_file, metrics_listen, http_listen } => {
            let config = HubConfig::load(&config).context("loading the hub configuration (use --config)")?;
            let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
            let addr = listener.local_addr()?;
            let metrics = match &metrics_listen {
                Some(a) => Some(tokio::net::TcpListener::bind(a).await.with_context(|| format!("binding {a}"))?),
                None => None,
            };
            let metrics_addr = metrics.as_ref().map(|l| l.local_addr()).transpose()?;
            let http = match &http_listen {
                Some(a) => Some(tokio::net::TcpListener::bind(a).await.with_context(|| format!("binding {a}"))?),
                None => None,
            };
            let http_addr = http.as_ref().map(|l| l.local_addr()).transpose()?;
            let ready = move || {
                if let Some(path) = ready_file {
                    // The metrics address first: the main ready file is what
                    // callers wait for. Each written atomically.
                    let mut files = metrics_addr.map(|a| (path.with_extension("metrics"), a)).into_iter().collect::<Vec<_>>();
                    files.extend(http_addr.map(|a| (path.with_extension("http"), a)));
                    files.push((path, addr));
                    for (path, addr) in files {
                        let tmp = path.with_extension("tmp");
                        if let Err(e) = std::fs::write(&tmp, addr.to_string()).and_then(|()| std::fs::rename(&tmp, &path)) {
                            tracing::error!(path = %path.display(), error = %e, "cannot write the ready file");
                        }
                    }
                }
            };
            tabadul_hub::run_notify(listener, metrics, http, config, shutdown_signal(), ready).await?;
        }
        Command::Doctor { config } => {
            let config = HubConfig::load(&config).context("loading the hub configuration (use --config)")?;
            let (report, problems) = tabadul_certs::checkup::render(&tabadul_hub::doctor::run(&config).await);
            print!("{report}");
            if problems > 0 {
                std::process::exit(1);
            }
        }
        Command::Unpin { config, member, reason } => {
            let config = HubConfig::load(&config).context("loading the hub configuration (use --config)")?;
            let (dropped, entry) = tabadul_hub::server::unpin(&config, &member, &reason)?;
            match dropped {
                Some(size) => println!("dropped the pin of {member}'s log at size {size}; logged as entry {entry}"),
                None => println!("{member}'s log was not pinned; logged as entry {entry}"),
            }
        }
        Command::Query {
            hub,
            ca,
            cert,
            key,
            crl,
            dataflow,
            breakdown,
            filters,
            period,
            members,
            aggregate,
            deadline_ms,
            json,
            statistic,
            variable,
            denominator,
        } => {
            let files = TlsFiles { ca, cert, key, crl };
            // A hub of our own network only: our certificate says which.
            let network = files.own_identity()?.network().to_owned();
            let client_tls = tls::client_config(&files)?;
            let channel = tls::channel(&hub, Expect::Role { network, role: Role::Hub }, client_tls.clone(), Duration::from_secs(5))?;
            let mut client = pb::hub_client::HubClient::new(channel).max_decoding_message_size(256 << 20);
            let mut q = tabadul_proto::query_from_args(dataflow, breakdown, &filters, period.as_deref()).map_err(anyhow::Error::msg)?;
            if statistic.is_some() || !variable.is_empty() {
                q.aggregation = Some(pb::Aggregation { statistic: statistic.unwrap_or_default(), variable, denominator });
            }
            let request = pb::FederatedQueryRequest { query: Some(q), members, regional_aggregate: aggregate, deadline_ms: deadline_ms.unwrap_or(0) };
            let r = match client.federated_query(request).await {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    // A refused certificate shows as a transport error: ask
                    // the hub once more, at the TLS level, why.
                    let diagnosis = match s.code() {
                        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => tls::diagnose(&hub, client_tls).await,
                        _ => None,
                    };
                    anyhow::bail!("the hub refused the query: {}", tls::explain_failure(&s, diagnosis.as_deref()));
                }
            };
            if json { print_json(&r) } else { print_table(&r) }
        }
    }
    Ok(())
}

fn print_table(r: &pb::FederatedQueryResponse) {
    let mut header: Vec<String> = r.dimensions.clone();
    header.extend(["VALUE".into(), "UNIT_MULT".into(), "OBS_STATUS".into()]);
    let protected = r.cells.iter().any(|c| !c.conf_status.is_empty());
    if protected {
        header.extend(["CONF_STATUS".into(), "FLAGS".into()]);
    }
    let rows: Vec<Vec<String>> = r
        .cells
        .iter()
        .map(|c| {
            let mut row = c.key.clone();
            let value = if matches!(c.conf_status.as_str(), "C" | "D") { "withheld".to_owned() } else { format_value(c.value) };
            row.extend([value, c.unit_mult.to_string(), c.obs_status.clone()]);
            if protected {
                row.extend([c.conf_status.clone(), c.flags.join(",")]);
            }
            row
        })
        .collect();
    print_grid(&header, &rows);
    if !r.aggregate_method.is_empty() {
        println!("\nRegional aggregate ({}):", r.aggregate_method);
        let mut header: Vec<String> = r.aggregate_dimensions.clone();
        header.extend(["VALUE".into(), "UNIT_MULT".into(), "COVERS".into()]);
        let rows: Vec<Vec<String>> = r
            .aggregate
            .iter()
            .map(|a| {
                let mut row = a.key.clone();
                row.extend([format_value(a.value), a.unit_mult.to_string(), format!("{} members: {}", a.covers.len(), a.covers.join(" "))]);
                row
            })
            .collect();
        print_grid(&header, &rows);
    }
    println!("\nMembers ({} asked):", r.members.len());
    for m in &r.members {
        let what = match pb::MemberState::try_from(m.state) {
            Ok(pb::MemberState::Answered) => format!(
                "{} cell{}{}, rule {}, policy {}",
                m.cells,
                if m.cells == 1 { "" } else { "s" },
                if m.partial { " (partial)" } else { "" },
                m.rule_id,
                m.policy_version
            ),
            _ => String::new(),
        };
        let detail = if m.partial || m.state != pb::MemberState::Answered as i32 { m.detail.as_str() } else { "" };
        println!(
            "  {:<4} {:<12} {:>6} ms  {what}{}{detail}",
            m.member,
            state_word(m.state),
            m.elapsed_ms,
            if what.is_empty() || detail.is_empty() { "" } else { " - " }
        );
    }
}

fn format_value(v: f64) -> String {
    // Up to four decimals, no trailing zeros: 22, 22.6, 16.0423.
    format!("{}", (v * 1e4).round() / 1e4)
}

fn print_grid(header: &[String], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[String]| {
        let text: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header);
    for row in rows {
        line(row);
    }
    if rows.is_empty() {
        println!("(no cells released)");
    }
}

fn print_json(r: &pb::FederatedQueryResponse) {
    let value = json!({
        "query_digest": r.query_digest,
        "dimensions": r.dimensions,
        "cells": r.cells.iter().map(|c| json!({"key": c.key, "value": c.value, "unit_mult": c.unit_mult, "obs_status": c.obs_status, "conf_status": c.conf_status, "flags": c.flags})).collect::<Vec<_>>(),
        "aggregate_method": r.aggregate_method,
        "aggregate_dimensions": r.aggregate_dimensions,
        "aggregate": r.aggregate.iter().map(|a| json!({"key": a.key, "value": a.value, "unit_mult": a.unit_mult, "covers": a.covers})).collect::<Vec<_>>(),
        "members": r.members.iter().map(|m| json!({
            "member": m.member, "status": state_word(m.state), "detail": m.detail, "rule_id": m.rule_id,
            "policy_version": m.policy_version, "cells": m.cells, "partial": m.partial, "elapsed_ms": m.elapsed_ms,
        })).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
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
