//! A local Tabadul federation in one command: a CA, a hub and nodes for
//! all 22 ALO member states as separate processes on loopback, loaded with
//! SYNTHETIC data, each with its own policy. Runs a few federated queries,
//! prints them, and stays up until Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use clap::Parser;
use tabadul_tests::{HubMember, NodeDir, Pki, Proc, bin, dead_endpoint, run_ok, start_hub_with, synthetic};

#[derive(Parser)]
#[command(about = "Start a local Tabadul federation with synthetic data")]
struct Args {
    /// Keep everything in this directory instead of a temporary one.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Exit after the demo queries instead of waiting for Ctrl-C.
    #[arg(long)]
    exit_after_demo: bool,
}

const OFFLINE: &str = "LBY";
const NO_SEX_BREAKDOWN: &str = "EGY";
const EMBARGO: &str = "JOR";
const WITHDRAWN: &str = "TUN";
const LATEST_YEAR: i32 = 2025;
/// A destination that grants every member the rows about its own nationals,
/// and one that grants members nothing (the hub still sees its figures).
const GRANTS_OWN_NATIONALS: &str = "SAU";
const GRANTS_MEMBERS_NOTHING: &str = "KWT";
/// Members that hold SYNTHETIC job-seeker records in the demo, and their regions.
const JOBSEEKER_REGIONS: &[(&str, &[&str])] =
    &[("MAR", &["MA-01", "MA-04", "MA-06", "MA-03"]), ("TUN", &["TN-11", "TN-61", "TN-51"]), ("JOR", &["JO-AM", "JO-IR", "JO-AZ"])];

fn policy_for(member: &str) -> String {
    let all = r#"["UNE_RATE", "UNE_PERS", "LF_PERS", "POP_WA", "LFPR", "EMP_ECO", "PES_JOBSEEKERS", "WP_ISSUED", "WP_VISAS", "MIG_STOCK", "MIG_PLACED_ABROAD", "MIG_RETURN_PLACED"]"#;
    let embargo_until = (time::OffsetDateTime::now_utc() + time::Duration::days(45)).date();
    let (breakdowns, extra) = match member {
        NO_SEX_BREAKDOWN => (r#"["AGE", "REGION", "ECO", "NATIONALITY", "DESTINATION"]"#, String::new()),
        EMBARGO => (
            r#"["SEX", "AGE", "REGION", "ECO", "NATIONALITY", "DESTINATION"]"#,
            format!("embargo = [{{ period = \"{LATEST_YEAR}\", until = \"{embargo_until}\" }}]\n"),
        ),
        _ => (r#"["SEX", "AGE", "REGION", "ECO", "NATIONALITY", "DESTINATION"]"#, String::new()),
    };
    let public = if member == NO_SEX_BREAKDOWN { "[]" } else { r#"["SEX"]"# };
    let corridors = if member == GRANTS_OWN_NATIONALS {
        "\n# Each member may see the permits, visas and stock of its own nationals here.\n\
         [[rule]]\nid = \"own-nationals\"\nrequester = \"member\"\ndataflows = [\"WP_ISSUED\", \"WP_VISAS\", \"MIG_STOCK\"]\n\
         breakdowns = [\"SEX\", \"OCU\", \"ECO\"]\nrows = { NATIONALITY = \"requester\" }\n"
    } else {
        ""
    };
    let _ = GRANTS_MEMBERS_NOTHING; // (no member rule at all: default deny)
    format!(
        "# Publication policy of {member} (SYNTHETIC demo network).\nversion = \"{member}-demo-1\"\n\n\
         [[rule]]\nid = \"{}-hub\"\nrequester = \"hub\"\ndataflows = {all}\nbreakdowns = {breakdowns}\nstart_period = \"2015\"\n{extra}\n\
         # Job-seeker records never leave; counts and mean months do, protected.\n\
         [[rule]]\nid = \"{}-hub-jobseekers\"\nrequester = \"hub\"\ndataflows = [\"PES_JOBSEEKER_RECORDS\"]\n\
         breakdowns = [\"SEX\", \"REGION\", \"OCU\"]\nstatistics = [\"count\", \"mean\"]\nvariables = [\"MONTHS_REGISTERED\"]\n\
         disclosure = {{ threshold = 10, cell_key = {{ d = 4, v = 2.0, js = 2 }} }}\n\n\
         # Headline rates are open data: the hub's public tier may show them.\n\
         [[rule]]\nid = \"{}-open-data\"\nrequester = \"public\"\ndataflows = [\"UNE_RATE\", \"UNE_PERS\", \"LF_PERS\", \"LFPR\", \"POP_WA\"]\n\
         breakdowns = {public}\nstart_period = \"2015\"\n{extra}{corridors}",
        member.to_lowercase(),
        member.to_lowercase(),
        member.to_lowercase()
    )
}

fn main() -> Result<()> {
    let args = Args::parse();
    let temp;
    let root: PathBuf = match &args.dir {
        Some(d) => {
            // It will hold the CA's key, every party's key and the tokens.
            std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700).create(d)?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("tabadul-federation-").tempdir()?;
            temp.path().to_owned()
        }
    };
    println!("Tabadul local federation in {}", root.display());
    println!("ALL FIGURES ARE SYNTHETIC: invented for demonstration, not statistics of any country.\n");

    let pki = Pki::init(&root)?;
    let hub_cert = pki.issue("hub", "alo")?;
    let operator = pki.issue("operator", "analyst")?;

    let mut nodes = Vec::new();
    for member in synthetic::members() {
        let node = NodeDir::create(&root.join("nodes"), &pki, member, &policy_for(member))?;
        let data = node.dir.join(format!("synthetic-{member}.csv"));
        let mut figures = synthetic::generate(member, 2015..=LATEST_YEAR);
        figures.extend(synthetic::corridors(member, 2015..=LATEST_YEAR));
        std::fs::write(&data, synthetic::to_sdmx_csv(&figures))?;
        run_ok(node.command(&["import"]).arg(&data)).with_context(|| format!("importing {member}"))?;
        if let Some(regions) = JOBSEEKER_REGIONS.iter().find(|(m, _)| *m == member).map(|(_, r)| *r) {
            let records = node.dir.join(format!("synthetic-jobseekers-{member}.csv"));
            std::fs::write(
                &records,
                tabadul_tests::microdata::to_csv(&tabadul_tests::microdata::jobseekers_in(
                    regions,
                    20_000,
                    member.len() as u64 * 31 + u64::from(member.as_bytes()[0]),
                )),
            )?;
            run_ok(node.command(&["import", "--table", "PES_JOBSEEKER_RECORDS"]).arg(&records)).with_context(|| format!("importing {member}'s job seekers"))?;
        }
        nodes.push(node);
    }
    let mut running: Vec<Proc> = Vec::new();
    let mut members = Vec::new();
    for node in &nodes {
        let endpoint = if node.member == OFFLINE {
            dead_endpoint()?
        } else {
            let proc = node.start()?;
            let endpoint = proc.addr.to_string();
            running.push(proc);
            endpoint
        };
        members.push(HubMember {
            code: node.member.clone(),
            endpoint,
            log_vkey: node.log_vkey.clone(),
            witness: true,
            witness_vkey: Some(node.witness_vkey.clone()),
        });
    }
    println!("started {} nodes ({OFFLINE} is configured but offline)", running.len());
    let withdrawn = nodes.iter().find(|n| n.member == WITHDRAWN).context("withdrawn member")?;
    let out = run_ok(&mut withdrawn.command(&[
        "withdraw",
        "--dataflow",
        "UNE_RATE",
        "--series",
        &format!("{WITHDRAWN}.F.."),
        "--reason",
        "revision of the female series under way",
    ]))?;
    print!("{WITHDRAWN}: {}", String::from_utf8_lossy(&out.stdout));
    // The front door on loopback only, in plain HTTP so a browser opens it
    // without a certificate warning; a real hub serves HTTPS.
    let hub = start_hub_with(&root.join("hub"), &pki, &hub_cert, &members, 3000, "[http]\ndangerous_plain_http = true\n")?;
    println!("hub listening on {} (gRPC, mutual TLS) and http://{} (SDMX REST, JSON API, dashboard)\n", hub.addr, hub.http.context("no HTTP front door")?);

    let query = |title: &str, args: &[&str]| -> Result<()> {
        println!("==> {title}\n    tabadul-hub query {}\n", args.join(" "));
        let out = run_ok(operator_query(&hub, &pki, &operator.cert, &operator.key).args(args))?;
        println!("{}", String::from_utf8_lossy(&out.stdout));
        Ok(())
    };
    query(
        "Unemployment rate by sex, 2024, with the regional rate from unemployed and labour force",
        &["--dataflow", "UNE_RATE", "--breakdown", "SEX", "--period", "2024", "--aggregate", "--members", "MAR,EGY,JOR,TUN,SAU,DZA,LBY"],
    )?;
    query(
        &format!("Unemployed persons, {LATEST_YEAR}, all members (note {EMBARGO}'s embargo)"),
        &["--dataflow", "UNE_PERS", "--period", &LATEST_YEAR.to_string(), "--aggregate"],
    )?;
    query(
        "Work permits issued by nationality, 2024 (Gulf members)",
        &["--dataflow", "WP_ISSUED", "--breakdown", "NATIONALITY", "--period", "2024", "--aggregate", "--members", "SAU,ARE,KWT,QAT,OMN,BHR"],
    )?;

    query(
        "Work-contract visas issued to Egyptians, 2024 (Gulf members; the mirror of Egypt's placements abroad)",
        &["--dataflow", "WP_VISAS", "--filter", "NATIONALITY=EGY", "--period", "2024", "--members", "SAU,ARE,KWT,QAT,OMN,BHR"],
    )?;
    corridor_demo(&nodes, &running)?;

    query(
        "Job seekers by occupation, from unit records that never leave their country (small cells withheld, counts perturbed)",
        &["--dataflow", "PES_JOBSEEKER_RECORDS", "--breakdown", "OCU", "--members", "MAR,TUN,JOR", "--aggregate"],
    )?;

    audit_demo(&root, &pki, &hub, &nodes, &members)?;

    println!("The federation is running. Query it as the operator with, for example:\n");
    println!(
        "  {} query --hub {} --ca {} --cert {} --key {} \\\n      --dataflow LFPR --breakdown SEX,AGE --period 2020:2024 --aggregate\n",
        bin("tabadul-hub").display(),
        hub.addr,
        pki.ca_cert().display(),
        operator.cert.display(),
        operator.key.display()
    );
    let http = hub.http.context("no HTTP front door")?;
    let token = run_ok(Command::new(bin("tabadul-hub")).arg("token").arg("--config").arg(root.join("hub/hub.toml")).args([
        "issue",
        "--name",
        "demo-analyst",
        "--expires-in",
        "12h",
    ]))?;
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    println!("The dashboard (Arabic; English with the button), as operator demo-analyst (its token expires in 12 hours):\n");
    println!("  http://{http}/ui/?run=1&flow=UNE_RATE&breakdown=SEX&codes=F,M&start=2018&end=2024#explorer&token={token}\n");
    println!("  the public tier (what members publish openly): http://{http}/ui/\n");
    println!("SDMX REST, for sdmx1, pysdmx or any SDMX tool (base URL http://{http}/sdmx):\n");
    println!(
        "  curl -H 'Authorization: Bearer {token}' -H 'Accept: application/vnd.sdmx.data+csv;version=1.0.0' \\\n      'http://{http}/sdmx/data/ALO,UNE_RATE,latest/MAR+TUN+JOR.F+M.Y_GE15._T?startPeriod=2020'\n"
    );
    println!("  JSON API: http://{http}/api/v1/openapi.json\n");
    println!("  a migration corridor's mirror statistics (Egypt's placements in Saudi Arabia beside its permits, visas and stock of Egyptians):");
    println!("  curl -H 'Authorization: Bearer {token}' 'http://{http}/api/v1/corridors/EGY/SAU?start_period=2020'\n");
    println!("  node logs: {}/nodes/<ISO3>/node.log, hub log: {}", root.display(), hub.log.display());
    if args.exit_after_demo {
        return Ok(());
    }
    println!("\nPress Ctrl-C to stop.");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(tokio::signal::ctrl_c())?;
    println!("stopping");
    drop(hub);
    drop(running);
    Ok(())
}

/// An origin asks destinations directly, node to node: EGY's node asks
/// SAU's (which grants each member its own nationals' rows) and KWT's
/// (which grants members nothing) for the permits issued to Egyptians.
fn corridor_demo(nodes: &[NodeDir], running: &[Proc]) -> Result<()> {
    let node = |m: &str| nodes.iter().find(|n| n.member == m).with_context(|| format!("node {m}"));
    // `running` skips the offline member; match by position among the rest.
    let started: Vec<&NodeDir> = nodes.iter().filter(|n| n.member != OFFLINE).collect();
    let addr = |m: &str| -> Result<String> {
        let i = started.iter().position(|n| n.member == m).with_context(|| format!("{m} is not running"))?;
        Ok(running[i].addr.to_string())
    };
    let egy = node("EGY")?;
    for destination in [GRANTS_OWN_NATIONALS, GRANTS_MEMBERS_NOTHING] {
        let (endpoint, vkey) = (addr(destination)?, node(destination)?.log_vkey.clone());
        let args = [
            "ask",
            "--member",
            destination,
            "--endpoint",
            &endpoint,
            "--log-vkey",
            &vkey,
            "--dataflow",
            "WP_ISSUED",
            "--breakdown",
            "NATIONALITY",
            "--period",
            "2024",
        ];
        println!(
            "==> EGY's node asks {destination}'s directly for work permits by nationality, 2024\n    tabadul-node ask --member {destination} --dataflow WP_ISSUED --breakdown NATIONALITY --period 2024\n"
        );
        let out = egy.command(&args).output()?;
        println!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn operator_query(hub: &Proc, pki: &Pki, cert: &Path, key: &Path) -> Command {
    let mut cmd = Command::new(bin("tabadul-hub"));
    cmd.arg("query")
        .arg("--hub")
        .arg(hub.addr.to_string())
        .arg("--ca")
        .arg(pki.ca_cert())
        .arg("--crl")
        .arg(pki.crl())
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key);
    cmd
}

/// The auditor's view: fetch the hub's log and one node's, verify them
/// offline (the hub's against a majority-of-witnesses policy), and match
/// the hub's receipts with the node's leaves.
fn audit_demo(root: &Path, pki: &Pki, hub: &Proc, nodes: &[NodeDir], members: &[HubMember]) -> Result<()> {
    let auditor = pki.issue("auditor", "court")?;
    let audit = bin("tabadul-audit");
    let dir = root.join("audit");
    let fetch = |addr: &str, server: &str, out: &Path| -> Result<()> {
        run_ok(
            Command::new(&audit)
                .arg("fetch")
                .arg("--endpoint")
                .arg(addr)
                .arg("--server")
                .arg(server)
                .arg("--ca")
                .arg(pki.ca_cert())
                .arg("--crl")
                .arg(pki.crl())
                .arg("--cert")
                .arg(&auditor.cert)
                .arg("--key")
                .arg(&auditor.key)
                .arg("--out")
                .arg(out),
        )?;
        Ok(())
    };
    // Witnesses cosign every few hundred milliseconds; give them a moment.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let witnesses: Vec<String> = nodes
        .iter()
        .filter(|n| n.member != OFFLINE)
        .map(|n| tabadul_audit::Verifier::parse(&n.witness_vkey).map(|v| format!("witness {}", v.cosigner())))
        .collect::<Result<_, _>>()?;
    let quorum = witnesses.len() / 2 + 1;
    let policy = dir.join("witness-policy.txt");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(&policy, format!("# a majority of the member nodes must cosign\n{}\nquorum {quorum}\n", witnesses.join("\n")))?;
    let (_, hub_vkey) = pki.hub_log_key()?;
    fetch(&hub.addr.to_string(), "spiffe://alo/hub/alo", &dir.join("hub"))?;
    let mar = members.iter().find(|m| m.code == "MAR").context("MAR")?;
    fetch(&mar.endpoint, "spiffe://alo/node/MAR", &dir.join("MAR"))?;
    println!("==> The auditor fetches and verifies the signed logs offline\n");
    for args in [
        vec!["verify".to_owned(), dir.join("hub").display().to_string(), "--vkey".into(), hub_vkey, "--witness-policy".into(), policy.display().to_string()],
        vec!["verify".to_owned(), dir.join("MAR").display().to_string(), "--vkey".into(), mar.log_vkey.clone()],
        vec![
            "cross-check".to_owned(),
            "--hub".into(),
            dir.join("hub").display().to_string(),
            "--hub-identity".into(),
            "spiffe://alo/hub/alo".into(),
            "--node".into(),
            format!("MAR={}", dir.join("MAR").display()),
        ],
    ] {
        println!("    tabadul-audit {}", args.join(" "));
        let out = Command::new(&audit).args(&args).output()?;
        println!("{}", String::from_utf8_lossy(&out.stdout));
        anyhow::ensure!(out.status.success(), "audit step failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
