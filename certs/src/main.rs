//! `tabadul-certs`: the network administrator's PKI tool.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tabadul_certs::pki::{CaDir, DEFAULT_LEAF_DAYS, IssueRequest};
use tabadul_certs::{Identity, Role, tls};
use time::{Duration, OffsetDateTime};

#[derive(Parser)]
#[command(name = "tabadul-certs", version, about = "Network CA, certificates and CRL for a Tabadul network")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The names a server's certificate is reached by.
#[derive(clap::Args)]
struct Endpoint {
    /// DNS name of the endpoint (servers); repeatable.
    #[arg(long = "dns")]
    dns_names: Vec<String>,
    /// IP address of the endpoint (servers); repeatable.
    #[arg(long = "ip")]
    ip_addresses: Vec<IpAddr>,
}

#[derive(Subcommand)]
enum Command {
    /// Make a new network CA (and an empty CRL) in DIR.
    Init {
        #[arg(long)]
        network: String,
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// CA validity in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issue a certificate for a node, hub, operator or auditor.
    Issue {
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// node, hub, operator or auditor.
        #[arg(long)]
        role: Role,
        /// For a node its ISO 3166-1 alpha-3 code (MAR); otherwise a name.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        endpoint: Endpoint,
        /// Validity in days from now.
        #[arg(long, default_value_t = DEFAULT_LEAF_DAYS)]
        days: i64,
        /// Where to write <role>-<id>.pem and <role>-<id>.key.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Make a key and a certificate signing request where the key will live
    /// (enrolment): only the request (.csr) goes to the network administrator.
    Request {
        /// The network's name, as the administrator gave it.
        #[arg(long)]
        network: String,
        #[arg(long)]
        role: Role,
        #[arg(long)]
        id: String,
        #[command(flatten)]
        endpoint: Endpoint,
        /// Renew: make the request for this existing key (the one the
        /// current certificate holds) instead of a new one; only the .csr
        /// is written.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Where to write <role>-<id>.key (0600) and <role>-<id>.csr.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Sign a certificate request for the identity you approve (the request
    /// must name exactly it); DNS names and IPs come from the request.
    Sign {
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// The request (.csr, PEM).
        #[arg(long)]
        csr: PathBuf,
        /// The role and id you approve for it.
        #[arg(long)]
        role: Role,
        #[arg(long)]
        id: String,
        /// Validity in days from now.
        #[arg(long, default_value_t = DEFAULT_LEAF_DAYS)]
        days: i64,
        /// Where to write <role>-<id>.pem.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Revoke a certificate (by its PEM file or serial) and rewrite the CRL.
    Revoke {
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        #[arg(long, conflicts_with = "serial", required_unless_present = "serial")]
        cert: Option<PathBuf>,
        #[arg(long)]
        serial: Option<String>,
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// Re-sign the CRL with a fresh validity window.
    Crl {
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
    },
    /// Print the identity, serial and expiry of a certificate.
    Show { cert: PathBuf },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Init { network, ca_dir, days } => {
            let ca = CaDir::init(&ca_dir, &network, days)?;
            println!("network CA for {network:?} written to {}", ca.cert_path().display());
            println!("CRL: {}", ca.crl_path().display());
        }
        Command::Issue { ca_dir, role, id, endpoint: Endpoint { dns_names, ip_addresses }, days, out } => {
            let ca = CaDir::open(&ca_dir)?;
            let identity = Identity::new(&ca.network()?, role, &id)?;
            let now = OffsetDateTime::now_utc();
            let req = IssueRequest {
                identity: identity.clone(),
                dns_names,
                ip_addresses,
                // A little slack for clocks that run behind ours.
                not_before: now - Duration::minutes(5),
                not_after: now + Duration::days(days),
            };
            let issued = ca.issue(&req, &out)?;
            println!("{identity}");
            println!("  certificate {}", issued.cert_path.display());
            println!("  key         {} (mode 0600)", issued.key_path.display());
            println!("  serial      {}", issued.serial_hex);
        }
        Command::Request { network, role, id, endpoint: Endpoint { dns_names, ip_addresses }, key, out } => {
            let identity = Identity::new(&network, role, &id)?;
            let renewing = key.is_some();
            let (csr, key) = tabadul_certs::pki::request_with(&identity, &dns_names, &ip_addresses, key.as_deref(), &out)?;
            println!("{identity}");
            println!("  request {} (send this to the network administrator)", csr.display());
            if renewing {
                println!("  key     {} (kept: the renewed certificate holds the same key)", key.display());
            } else {
                println!("  key     {} (mode 0600; it never leaves this machine)", key.display());
            }
        }
        Command::Sign { ca_dir, csr, role, id, days, out } => {
            let ca = CaDir::open(&ca_dir)?;
            let identity = Identity::new(&ca.network()?, role, &id)?;
            let text = std::fs::read_to_string(&csr).with_context(|| format!("reading {}", csr.display()))?;
            let now = OffsetDateTime::now_utc();
            let approved =
                tabadul_certs::pki::SignRequest { identity: identity.clone(), not_before: now - Duration::minutes(5), not_after: now + Duration::days(days) };
            let signed = ca.sign(&text, &approved, &out).with_context(|| format!("{}", csr.display()))?;
            println!("{identity}");
            println!("  certificate {}", signed.cert_path.display());
            println!("  serial      {}", signed.serial_hex);
            for d in &signed.dns_names {
                println!("  dns         {d}");
            }
            for ip in &signed.ip_addresses {
                println!("  ip          {ip}");
            }
        }
        Command::Revoke { ca_dir, cert, serial, reason } => {
            let ca = CaDir::open(&ca_dir)?;
            let serial = match (cert, serial) {
                (Some(cert), _) => serial_of(&cert)?,
                (None, Some(serial)) => serial,
                (None, None) => unreachable!("clap requires one of them"),
            };
            ca.revoke(&serial, &reason)?;
            println!("revoked {serial}; CRL rewritten at {}", ca.crl_path().display());
        }
        Command::Crl { ca_dir } => {
            let ca = CaDir::open(&ca_dir)?;
            ca.refresh_crl()?;
            println!("CRL re-signed at {}", ca.crl_path().display());
        }
        Command::Show { cert } => {
            let chain = tls::load_certs(&cert)?;
            let identity = tls::identity_of(&chain[0])?;
            let not_after = tls::not_after(&cert)?;
            println!("identity  {identity}");
            println!("serial    {}", serial_of(&cert)?);
            println!("not after {}", OffsetDateTime::from_unix_timestamp(not_after)?);
        }
    }
    Ok(())
}

fn serial_of(cert: &std::path::Path) -> anyhow::Result<String> {
    let chain = tls::load_certs(cert)?;
    tls::serial_hex(&chain[0]).with_context(|| format!("reading the serial of {}", cert.display()))
}
