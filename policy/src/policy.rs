//! The node's publication policy: a TOML file, default deny.
//!
//! ```toml
//! version = "mar-2026-11"          # optional label
//!
//! [[rule]]
//! id = "hub-labour-force"
//! requester = "hub"                # hub | hub:<id> | member | member:<ISO3> | authenticated | public
//! dataflows = ["UNE_RATE", "UNE_PERS", "LF_PERS"]
//! breakdowns = ["SEX", "AGE"]      # dimensions that may vary in an answer
//! start_period = "2015"            # optional, inclusive
//! end_period = "2025"              # optional, inclusive
//! embargo = [{ period = "2025", until = "2026-12-15" }]
//! ```
//!
//! A rule may grant only some rows: `rows` names, per dimension, the codes
//! a requester receives, either listed or bound to the requester's own
//! member code. A destination can give every member the permits issued to
//! its own nationals, and nothing about anyone else's:
//!
//! ```toml
//! [[rule]]
//! id = "members-own-nationals"
//! requester = "member"             # any member state's node
//! dataflows = ["WP_ISSUED"]
//! breakdowns = ["SEX", "ECO"]
//! rows = { NATIONALITY = "requester" }   # or a list: ["EGY", "JOR"]
//! ```
//!
//! A scoped dimension may be broken down or filtered within its rows (it
//! need not be listed in `breakdowns`); its total, and every other code,
//! is not granted. A rule bound to the requester never matches a hub,
//! which has no member code: the next rule in file order decides for it.
//!
//! Microdata tables (`[microdata.*]` in the dictionary) are granted the same
//! way, with what may be computed and how it is protected:
//!
//! ```toml
//! [disclosure.PES_JOBSEEKER_RECORDS]   # defaults for a table
//! threshold = 10                       # fewest contributors per cell
//! dominance = { n = 2, k = 85 }        # (n,k) rule for magnitudes
//! p_percent = 10                       # p% rule for magnitudes
//! group = { max_size = 50, share = 0.9 }
//! cell_key = { d = 4, v = 2.0, js = 2, magnitude = 0.1 }
//! ledger = "network"                   # one requester: every member, hub
//!                                      # and the public of the network
//!
//! [[rule]]
//! id = "hub-jobseekers"
//! requester = "hub"
//! dataflows = ["PES_JOBSEEKER_RECORDS"]
//! breakdowns = ["SEX", "REGION", "OCU"]
//! statistics = ["count", "mean"]       # default: count only
//! variables = ["MONTHS_REGISTERED"]    # variables magnitudes may use
//! disclosure = { threshold = 20 }      # per requester: overrides the table's
//! # dp = { epsilon = 0.5, budget = 10 } # differential privacy for counts
//! ```
//!
//! A request is allowed by the first rule, in file order, that names its
//! requester and dataflow and grants every dimension it breaks down. If
//! rules match the requester and dataflow but none grants the breakdown,
//! the refusal names each rule and what it lacks; if none matches at all,
//! the refusal says no rule grants it. Every decision names its rule.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tabadul_certs::{Identity, Role};
use tabadul_proto::{Dataflow, Dictionary, REF_AREA};
use toml::Spanned;

/// Why a policy file was rejected (the previous policy stays in force).
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {reason}")]
pub struct PolicyError {
    pub path: PathBuf,
    pub line: usize,
    pub reason: String,
}

/// Who a rule grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    /// Any hub of the network, or one named hub.
    Hub(Option<String>),
    /// A named member state's node.
    Member(String),
    /// Any member state's node.
    Members,
    /// Any authenticated node or hub of the network.
    Authenticated,
    /// Anyone: the figures are public. At the node this still means an
    /// authenticated peer (there is no anonymous access); it tells the hub
    /// it may republish them openly.
    Public,
}

impl Requester {
    fn parse(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "hub" => Ok(Requester::Hub(None)),
            None if s == "member" => Ok(Requester::Members),
            None if s == "authenticated" => Ok(Requester::Authenticated),
            None if s == "public" => Ok(Requester::Public),
            Some(("hub", id)) if !id.is_empty() => Ok(Requester::Hub(Some(id.to_owned()))),
            Some(("member", code)) if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) => Ok(Requester::Member(code.to_owned())),
            _ => Err(format!("requester {s:?} must be hub, hub:<id>, member, member:<ISO 3166-1 alpha-3>, authenticated or public")),
        }
    }

    pub fn matches(&self, who: &Identity) -> bool {
        match self {
            Requester::Hub(None) => who.role() == Role::Hub,
            Requester::Hub(Some(id)) => who.role() == Role::Hub && who.id() == id,
            Requester::Member(code) => who.role() == Role::Node && who.id() == code,
            Requester::Members => who.role() == Role::Node,
            Requester::Authenticated | Requester::Public => matches!(who.role(), Role::Hub | Role::Node),
        }
    }
}

impl fmt::Display for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requester::Hub(None) => f.write_str("hub"),
            Requester::Hub(Some(id)) => write!(f, "hub:{id}"),
            Requester::Member(c) => write!(f, "member:{c}"),
            Requester::Members => f.write_str("member"),
            Requester::Authenticated => f.write_str("authenticated"),
            Requester::Public => f.write_str("public"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embargo {
    pub period: String,
    /// ISO date (YYYY-MM-DD) from which the period may be released.
    pub until: time::Date,
}

/// The rows of one dimension a rule grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowScope {
    /// Only the requester's own member code (`"requester"`).
    Requester,
    /// These codes of the dimension's codelist.
    Codes(BTreeSet<String>),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub line: usize,
    pub requester: Requester,
    pub dataflows: Vec<String>,
    pub breakdowns: BTreeSet<String>,
    /// Per dimension: the only rows granted (none: every row).
    pub rows: std::collections::BTreeMap<String, RowScope>,
    pub start_period: Option<String>,
    pub end_period: Option<String>,
    pub embargoes: Vec<Embargo>,
    /// Microdata: statistics and variables granted.
    pub statistics: Vec<String>,
    pub variables: Vec<String>,
    /// Microdata: disclosure settings for this requester (over the table's).
    pub disclosure: DisclosureSpec,
}

/// Disclosure-control settings as written; unset fields fall back to the
/// table's `[disclosure.<table>]`, then to [`crate::disclosure::Params::default`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisclosureSpec {
    pub threshold: Option<u64>,
    pub dominance: Option<DominanceSpec>,
    pub p_percent: Option<f64>,
    pub group: Option<GroupSpec>,
    pub cell_key: Option<CellKeySpec>,
    pub dp: Option<DpSpec>,
    /// Who counts as one requester: "network" (the default: every member,
    /// hub and the public of the network) or "dangerous-per-requester".
    pub ledger: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DominanceSpec {
    pub n: usize,
    pub k: f64,
}
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub max_size: u64,
    pub share: f64,
}
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellKeySpec {
    pub d: u32,
    pub v: f64,
    #[serde(default)]
    pub js: u32,
    /// Noise on sums: between half and all of `magnitude × |sum| / √n`.
    #[serde(default = "default_magnitude")]
    pub magnitude: f64,
}
fn default_magnitude() -> f64 {
    0.1
}
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpSpec {
    pub epsilon: f64,
    pub budget: f64,
}

impl DisclosureSpec {
    fn over(&self, base: &DisclosureSpec) -> DisclosureSpec {
        DisclosureSpec {
            threshold: self.threshold.or(base.threshold),
            dominance: self.dominance.or(base.dominance),
            p_percent: self.p_percent.or(base.p_percent),
            group: self.group.or(base.group),
            cell_key: self.cell_key.or(base.cell_key),
            dp: self.dp.or(base.dp),
            ledger: self.ledger.clone().or_else(|| base.ledger.clone()),
        }
    }

    /// Checks the settings and builds the parameters (and p-table).
    pub fn params(&self) -> Result<crate::disclosure::Params, String> {
        let d = crate::disclosure::Params::default();
        let threshold = self.threshold.unwrap_or(d.threshold);
        if threshold == 0 {
            return Err("threshold must be at least 1".into());
        }
        let dominance = match self.dominance {
            None => d.dominance,
            Some(x) if (1..=crate::disclosure::TOP_K).contains(&x.n) && x.k > 0.0 && x.k <= 100.0 => Some((x.n, x.k)),
            Some(x) => return Err(format!("dominance n = {} must be 1..={} and k = {} in (0, 100]", x.n, crate::disclosure::TOP_K, x.k)),
        };
        let p_percent = match self.p_percent {
            None => d.p_percent,
            Some(p) if (0.0..=100.0).contains(&p) => (p > 0.0).then_some(p),
            Some(p) => return Err(format!("p_percent = {p} must be in [0, 100]")),
        };
        let group = match self.group {
            None => d.group,
            Some(g) if g.share > 0.0 && g.share <= 1.0 => (g.max_size > 0).then_some((g.max_size, g.share)),
            Some(g) => return Err(format!("group share = {} must be in (0, 1]", g.share)),
        };
        let cell_key = match self.cell_key {
            None => None,
            Some(c) => {
                if !(0.0..=1.0).contains(&c.magnitude) {
                    return Err(format!("cell_key magnitude = {} must be in [0, 1]", c.magnitude));
                }
                let t = crate::disclosure::ptable::PTable::new(crate::disclosure::ptable::PTableParams { d: c.d, v: c.v, js: c.js })?;
                Some((std::sync::Arc::new(t), c.magnitude))
            }
        };
        let dp = match self.dp {
            None => None,
            Some(x) if x.epsilon > 0.0 && x.epsilon.is_finite() && x.budget >= x.epsilon && x.budget.is_finite() => Some((x.epsilon, x.budget)),
            Some(x) => return Err(format!("dp epsilon = {} must be positive and budget = {} at least epsilon", x.epsilon, x.budget)),
        };
        let ledger = match self.ledger.as_deref() {
            None | Some("network") => crate::disclosure::LedgerScope::Network,
            Some("dangerous-per-requester") => crate::disclosure::LedgerScope::DangerousPerRequester,
            Some(other) => return Err(format!("ledger = {other:?} must be \"network\" or \"dangerous-per-requester\"")),
        };
        Ok(crate::disclosure::Params { threshold, dominance, p_percent, group, cell_key, dp, ledger })
    }
}

/// A loaded policy. Immutable: a reload builds a new one.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `<label>@<first 12 hex of SHA-256>` or just the digest prefix: a
    /// different file always gets a different id.
    pub version: String,
    pub rules: Vec<Rule>,
    /// Per microdata table: the disclosure defaults.
    pub disclosure: std::collections::BTreeMap<String, DisclosureSpec>,
    /// The parameters in force per (rule id, table), checked at load.
    params: std::collections::BTreeMap<(String, String), crate::disclosure::Params>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Option<String>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    disclosure: std::collections::BTreeMap<String, Spanned<DisclosureSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    requester: Spanned<String>,
    dataflows: Vec<Spanned<String>>,
    #[serde(default)]
    breakdowns: Vec<Spanned<String>>,
    #[serde(default)]
    rows: std::collections::BTreeMap<String, Spanned<RawRows>>,
    start_period: Option<Spanned<String>>,
    end_period: Option<Spanned<String>>,
    #[serde(default)]
    embargo: Vec<Spanned<RawEmbargo>>,
    #[serde(default)]
    statistics: Vec<Spanned<String>>,
    #[serde(default)]
    variables: Vec<Spanned<String>>,
    disclosure: Option<Spanned<DisclosureSpec>>,
}

/// `"requester"`, one code, or a list of codes.
#[derive(Deserialize)]
#[serde(untagged, expecting = "rows: each dimension takes \"requester\", a code, or a list of codes")]
enum RawRows {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmbargo {
    period: String,
    until: String,
}

impl Policy {
    pub fn load(path: &Path, dict: &Dictionary) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError { path: path.to_owned(), line: 0, reason: e.to_string() })?;
        Self::parse(&text, path, dict)
    }

    pub fn parse(text: &str, path: &Path, dict: &Dictionary) -> Result<Self, PolicyError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let err = |offset: usize, reason: String| PolicyError { path: path.to_owned(), line: line_of(offset), reason };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            err(offset, e.message().to_owned())
        })?;
        let mut rules = Vec::new();
        let mut ids = BTreeSet::new();
        let mut params = std::collections::BTreeMap::new();
        for (table, spec) in &raw.disclosure {
            if dict.microdata(table).is_none() {
                return Err(err(spec.span().start, format!("[disclosure.{table}]: no microdata table {table:?} in dictionary {}", dict.version)));
            }
            spec.get_ref().params().map_err(|m| err(spec.span().start, format!("disclosure for {table}: {m}")))?;
        }
        for spanned in raw.rule {
            let start = spanned.span().start;
            let r = spanned.into_inner();
            if !ids.insert(r.id.get_ref().clone()) {
                return Err(err(r.id.span().start, format!("rule id {:?} is used twice", r.id.get_ref())));
            }
            let requester = Requester::parse(r.requester.get_ref()).map_err(|m| err(r.requester.span().start, m))?;
            if r.dataflows.is_empty() {
                return Err(err(start, format!("rule {:?} names no dataflow", r.id.get_ref())));
            }
            // (id, dimensions) of each dataflow or microdata table granted.
            let mut flows: Vec<(&str, &[String])> = Vec::new();
            let mut tables = Vec::new();
            for f in &r.dataflows {
                if let Some(flow) = dict.dataflow(f.get_ref()) {
                    flows.push((&flow.id, &flow.dimensions));
                } else if let Some(t) = dict.microdata(f.get_ref()) {
                    flows.push((&t.id, &t.dimensions));
                    tables.push(t);
                } else {
                    return Err(err(f.span().start, format!("unknown dataflow {:?} (not in dictionary {})", f.get_ref(), dict.version)));
                }
            }
            let mut breakdowns = BTreeSet::new();
            for b in &r.breakdowns {
                let dim = b.get_ref();
                if dict.dimension(dim).is_none() {
                    return Err(err(b.span().start, format!("unknown dimension {dim:?}")));
                }
                if dim == REF_AREA {
                    return Err(err(b.span().start, "REF_AREA is always this member; it is not a breakdown".into()));
                }
                // A rule may span dataflows of different shapes; a breakdown
                // applies to those that have the dimension.
                if flows.iter().all(|f| !f.1.contains(dim)) {
                    let names: Vec<&str> = flows.iter().map(|f| f.0).collect();
                    return Err(err(b.span().start, format!("{} has no dimension {dim}", names.join(" or "))));
                }
                breakdowns.insert(dim.clone());
            }
            let mut rows = std::collections::BTreeMap::new();
            for (dim, scope) in &r.rows {
                let at = scope.span().start;
                if dim == REF_AREA || dict.dimension(dim).is_none() {
                    return Err(err(at, format!("rows: {dim:?} is not a dimension a rule can scope (unknown, or REF_AREA, which is always this member)")));
                }
                if flows.iter().all(|f| !f.1.contains(dim)) {
                    let names: Vec<&str> = flows.iter().map(|f| f.0).collect();
                    return Err(err(at, format!("rows: {} has no dimension {dim}", names.join(" or "))));
                }
                let scope = match scope.get_ref() {
                    RawRows::One(word) if word == "requester" => {
                        if !matches!(requester, Requester::Member(_) | Requester::Members | Requester::Authenticated) {
                            return Err(err(
                                at,
                                format!(
                                    "rows: {dim} = \"requester\" binds rows to the requester's member code, and requester {requester} has none; use member, member:<ISO3> or authenticated"
                                ),
                            ));
                        }
                        RowScope::Requester
                    }
                    RawRows::One(code) => RowScope::Codes(BTreeSet::from([code.clone()])),
                    RawRows::Many(codes) => RowScope::Codes(codes.iter().cloned().collect()),
                };
                if let RowScope::Codes(codes) = &scope {
                    if codes.is_empty() {
                        return Err(err(at, format!("rows: {dim} lists no code (a rule that grants no row grants nothing: remove it)")));
                    }
                    if let Some(bad) = codes.iter().find(|c| !dict.has_code(dim, c)) {
                        return Err(err(at, format!("rows: {bad:?} is not a code of {dim}")));
                    }
                }
                rows.insert(dim.clone(), scope);
            }
            let period = |p: &Option<Spanned<String>>| -> Result<Option<String>, PolicyError> {
                match p {
                    None => Ok(None),
                    Some(s) if valid_period(s.get_ref()) => Ok(Some(s.get_ref().clone())),
                    Some(s) => Err(err(s.span().start, format!("period {:?} is not YYYY, YYYY-Qn, YYYY-Sn or YYYY-MM", s.get_ref()))),
                }
            };
            let mut embargoes = Vec::new();
            for e in &r.embargo {
                let raw = e.get_ref();
                if !valid_period(&raw.period) {
                    return Err(err(e.span().start, format!("embargo period {:?} is not a period", raw.period)));
                }
                let until = time::Date::parse(&raw.until, time::macros::format_description!("[year]-[month]-[day]"))
                    .map_err(|_| err(e.span().start, format!("embargo date {:?} is not YYYY-MM-DD", raw.until)))?;
                embargoes.push(Embargo { period: raw.period.clone(), until });
            }
            for st in &r.statistics {
                if crate::disclosure::Statistic::parse(st.get_ref()).is_none() || st.get_ref().is_empty() {
                    return Err(err(st.span().start, format!("statistic {:?} must be count, weighted-count, sum, mean or ratio", st.get_ref())));
                }
            }
            for v in &r.variables {
                if !tables.iter().any(|t| t.has_variable(v.get_ref())) {
                    return Err(err(v.span().start, format!("no microdata table of this rule has a variable {:?}", v.get_ref())));
                }
            }
            if (!r.statistics.is_empty() || !r.variables.is_empty() || r.disclosure.is_some()) && tables.is_empty() {
                return Err(err(start, format!("rule {:?} sets statistics, variables or disclosure but grants no microdata table", r.id.get_ref())));
            }
            let disclosure = r.disclosure.as_ref().map(|d| d.get_ref().clone()).unwrap_or_default();
            for t in &tables {
                let base = raw.disclosure.get(&t.id).map(|d| d.get_ref().clone()).unwrap_or_default();
                let at = r.disclosure.as_ref().map_or(start, |d| d.span().start);
                let p = disclosure.over(&base).params().map_err(|m| err(at, format!("disclosure for {}: {m}", t.id)))?;
                params.insert((r.id.get_ref().clone(), t.id.clone()), p);
            }
            rules.push(Rule {
                id: r.id.into_inner(),
                line: line_of(start),
                requester,
                dataflows: r.dataflows.into_iter().map(Spanned::into_inner).collect(),
                breakdowns,
                rows,
                start_period: period(&r.start_period)?,
                end_period: period(&r.end_period)?,
                embargoes,
                statistics: r.statistics.into_iter().map(Spanned::into_inner).collect(),
                variables: r.variables.into_iter().map(Spanned::into_inner).collect(),
                disclosure,
            });
        }
        let digest = hex::encode(&ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref()[..6]);
        let version = match raw.version {
            Some(label) => format!("{label}@{digest}"),
            None => digest,
        };
        let disclosure = raw.disclosure.into_iter().map(|(t, s)| (t, s.into_inner())).collect();
        Ok(Policy { version, rules, disclosure, params })
    }

    /// This policy as it applies to the public: its `requester = "public"`
    /// rules only. Used when the hub asks on behalf of its anonymous tier.
    pub fn public_only(&self) -> Policy {
        Policy {
            version: self.version.clone(),
            rules: self.rules.iter().filter(|r| r.requester == Requester::Public).cloned().collect(),
            disclosure: self.disclosure.clone(),
            params: self.params.clone(),
        }
    }

    /// The disclosure parameters a rule applies to a microdata table.
    pub fn disclosure_params(&self, rule: &str, table: &str) -> Option<&crate::disclosure::Params> {
        self.params.get(&(rule.to_owned(), table.to_owned()))
    }

    /// Decides a request from what it asks, before any data is read.
    pub fn decide(&self, who: &Identity, flow: &Dataflow, released: &BTreeSet<String>) -> Grant {
        self.decide_id(who, &flow.id, released)
    }

    /// [`Policy::decide`] for a dataflow or microdata table by id.
    pub fn decide_id(&self, who: &Identity, id: &str, released: &BTreeSet<String>) -> Grant {
        let mut lacks = Vec::new();
        for rule in self.rules.iter().filter(|r| r.applies_to(who) && r.dataflows.iter().any(|d| d == id)) {
            let missing: Vec<&str> = released.iter().filter(|d| !rule.breakdowns.contains(*d) && !rule.rows.contains_key(*d)).map(String::as_str).collect();
            if missing.is_empty() {
                return Grant::Allowed(Box::new(rule.clone()));
            }
            lacks.push(format!(
                "rule {} (line {}) does not grant a breakdown by {} (it grants {})",
                rule.id,
                rule.line,
                missing.join(", "),
                if rule.breakdowns.is_empty() { "totals only".to_owned() } else { rule.breakdowns.iter().cloned().collect::<Vec<_>>().join(", ") }
            ));
        }
        if lacks.is_empty() {
            Grant::Refused { rule_id: String::new(), reason: format!("default deny: no rule grants {who} access to {id}") }
        } else {
            let rule_id = self.rules.iter().find(|r| r.applies_to(who) && r.dataflows.iter().any(|d| d == id)).map(|r| r.id.clone()).unwrap_or_default();
            Grant::Refused { rule_id, reason: lacks.join("; ") }
        }
    }
}

/// The policy's answer to a request.
#[derive(Debug, Clone)]
pub enum Grant {
    Allowed(Box<Rule>),
    Refused { rule_id: String, reason: String },
}

impl Rule {
    /// Whether `period` is in this rule's range.
    /// The rule names `who`, and can bind its rows to `who` where it must:
    /// a rule scoped to the requester's own code never applies to a hub.
    pub fn applies_to(&self, who: &Identity) -> bool {
        self.requester.matches(who) && (who.role() == Role::Node || !self.rows.values().any(|s| *s == RowScope::Requester))
    }

    /// The rows `who` may receive, per scoped dimension.
    pub fn rows_for(&self, who: &Identity) -> std::collections::BTreeMap<String, BTreeSet<String>> {
        self.rows
            .iter()
            .map(|(dim, scope)| {
                let codes = match scope {
                    RowScope::Requester if who.role() == Role::Node => BTreeSet::from([who.id().to_owned()]),
                    RowScope::Requester => BTreeSet::new(),
                    RowScope::Codes(codes) => codes.clone(),
                };
                (dim.clone(), codes)
            })
            .collect()
    }

    /// The row scope in words, for `policy explain` and refusals:
    /// `NATIONALITY = EGY (the requester's own)`.
    pub fn rows_text(&self, who: Option<&Identity>) -> Vec<String> {
        self.rows
            .iter()
            .map(|(dim, scope)| match (scope, who) {
                (RowScope::Requester, Some(w)) if w.role() == Role::Node => format!("{dim} = {} (the requester's own)", w.id()),
                (RowScope::Requester, _) => format!("{dim} = the requester's own member code"),
                (RowScope::Codes(codes), _) => format!("{dim} = {}", codes.iter().cloned().collect::<Vec<_>>().join(", ")),
            })
            .collect()
    }

    pub fn period_in_range(&self, period: &str) -> bool {
        period_in(period, self.start_period.as_deref(), self.end_period.as_deref())
    }

    /// The embargo that holds `period` back on `today`, if any.
    pub fn embargo_on(&self, period: &str, today: time::Date) -> Option<&Embargo> {
        self.embargoes.iter().find(|e| today < e.until && same_or_within(period, &e.period))
    }
}

/// `period` (any SDMX form) lies in the inclusive range. Bounds of a coarser
/// form apply to the year they name: `2024-Q3` is within `..=2024`.
pub fn period_in(period: &str, start: Option<&str>, end: Option<&str>) -> bool {
    let after_start = start.is_none_or(|s| period >= s || s.starts_with(period) || period.starts_with(s));
    let before_end = end.is_none_or(|e| period <= e || period.starts_with(e));
    after_start && before_end
}

/// `2025-Q1` is within the embargo of `2025`; `2025` is within `2025`.
fn same_or_within(period: &str, embargoed: &str) -> bool {
    period == embargoed || (period.starts_with(embargoed) && period.as_bytes().get(embargoed.len()) == Some(&b'-'))
}

fn valid_period(p: &str) -> bool {
    let b = p.as_bytes();
    b.len() >= 4
        && b[..4].iter().all(u8::is_ascii_digit)
        && match &b[4..] {
            [] => true,
            [b'-', b'Q', q] => (b'1'..=b'4').contains(q),
            [b'-', b'S', s] => (b'1'..=b'2').contains(s),
            [b'-', m1, m2] => m1.is_ascii_digit() && m2.is_ascii_digit(),
            _ => false,
        }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dict() -> Dictionary {
        // Unit tests run in the package directory.
        Dictionary::load(Path::new("../deploy/dictionary.toml")).unwrap()
    }

    const POLICY: &str = r#"version = "t1"

[[rule]]
id = "hub-une"
requester = "hub"
dataflows = ["UNE_RATE", "UNE_PERS"]
breakdowns = ["SEX"]
start_period = "2015"
embargo = [{ period = "2025", until = "2999-01-01" }]

[[rule]]
id = "egy-all"
requester = "member:EGY"
dataflows = ["UNE_RATE"]
breakdowns = ["SEX", "AGE", "REGION"]
"#;

    fn id(s: &str) -> Identity {
        s.parse().unwrap()
    }

    #[test]
    fn decisions_name_their_rule() {
        let d = dict();
        let p = Policy::parse(POLICY, Path::new("p.toml"), &d).unwrap();
        assert!(p.version.starts_with("t1@"));
        let une = d.dataflow("UNE_RATE").unwrap();
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let hub = id("spiffe://alo/hub/alo");
        match p.decide(&hub, une, &set(&["SEX"])) {
            Grant::Allowed(r) => assert_eq!(r.id, "hub-une"),
            other => panic!("{other:?}"),
        }
        match p.decide(&hub, une, &set(&["SEX", "REGION"])) {
            Grant::Refused { rule_id, reason } => {
                assert_eq!(rule_id, "hub-une");
                assert!(reason.contains("REGION") && reason.contains("line 3"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        match p.decide(&id("spiffe://alo/node/JOR"), une, &set(&[])) {
            Grant::Refused { rule_id, reason } => {
                assert!(rule_id.is_empty());
                assert!(reason.contains("default deny"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(p.decide(&id("spiffe://alo/node/EGY"), une, &set(&["REGION"])), Grant::Allowed(_)));
        // An operator is never a requester at a node.
        assert!(matches!(p.decide(&id("spiffe://alo/operator/ana"), une, &set(&[])), Grant::Refused { .. }));
    }

    #[test]
    fn errors_name_the_line() {
        let d = dict();
        for (from, to, line, what) in [
            ("\"UNE_PERS\"]", "\"UNE_NOPE\"]", 6, "unknown dataflow"),
            ("[\"SEX\"]\nstart", "[\"SEXX\"]\nstart", 7, "unknown dimension"),
            ("member:EGY", "member:egypt", 13, "requester"),
            ("2999-01-01", "someday", 9, "YYYY-MM-DD"),
            ("breakdowns = [\"SEX\", \"AGE\", \"REGION\"]", "breakdowns = [\"ECO\"]", 15, "no dimension ECO"),
        ] {
            let text = POLICY.replacen(from, to, 1);
            let e = Policy::parse(&text, Path::new("p.toml"), &d).unwrap_err();
            assert_eq!(e.line, line, "{e}");
            assert!(e.reason.contains(what), "{e}");
        }
    }

    const CORRIDOR: &str = r#"
[[rule]]
id = "own-nationals"
requester = "member"
dataflows = ["WP_ISSUED"]
breakdowns = ["SEX"]
rows = { NATIONALITY = "requester" }

[[rule]]
id = "hub-totals"
requester = "hub"
dataflows = ["WP_ISSUED"]
breakdowns = ["SEX"]
"#;

    #[test]
    fn rows_bound_to_the_requester_follow_the_requester() {
        let d = dict();
        let p = Policy::parse(CORRIDOR, Path::new("p.toml"), &d).unwrap();
        let wp = d.dataflow("WP_ISSUED").unwrap();
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let egy = id("spiffe://alo/node/EGY");
        // The scoped dimension need not be a listed breakdown...
        let Grant::Allowed(rule) = p.decide(&egy, wp, &set(&["NATIONALITY", "SEX"])) else { panic!("EGY refused") };
        assert_eq!(rule.rows_for(&egy)["NATIONALITY"], set(&["EGY"]));
        assert_eq!(rule.rows_for(&id("spiffe://alo/node/JOR"))["NATIONALITY"], set(&["JOR"]));
        assert_eq!(rule.rows_text(Some(&egy)), ["NATIONALITY = EGY (the requester's own)"]);
        // ...but every other dimension still must be.
        assert!(matches!(p.decide(&egy, wp, &set(&["ECO"])), Grant::Refused { .. }));
        // A hub has no member code: the bound rule never applies to it, and
        // its own rule grants no nationality breakdown.
        let hub = id("spiffe://alo/hub/alo");
        match p.decide(&hub, wp, &set(&["NATIONALITY"])) {
            Grant::Refused { rule_id, reason } => assert!(rule_id == "hub-totals" && reason.contains("NATIONALITY"), "{rule_id}: {reason}"),
            other => panic!("{other:?}"),
        }
        let Grant::Allowed(rule) = p.decide(&hub, wp, &set(&["SEX"])) else { panic!("hub refused its totals") };
        assert_eq!(rule.id, "hub-totals");
    }

    #[test]
    fn row_scopes_are_checked_at_load() {
        let d = dict();
        for (from, to, what) in [
            ("requester = \"member\"", "requester = \"hub\"", "has none"),
            ("requester = \"member\"", "requester = \"public\"", "has none"),
            ("NATIONALITY = \"requester\"", "NATIONALITY = [\"EGY\", \"XXX\"]", "\"XXX\" is not a code of NATIONALITY"),
            ("NATIONALITY = \"requester\"", "NATIONALITY = []", "lists no code"),
            ("NATIONALITY = \"requester\"", "REGION = \"requester\"", "has no dimension REGION"),
            ("NATIONALITY = \"requester\"", "REF_AREA = \"requester\"", "REF_AREA"),
            ("NATIONALITY = \"requester\"", "NATIONALITY = 3", "rows"),
        ] {
            let text = CORRIDOR.replacen(from, to, 1);
            let e = Policy::parse(&text, Path::new("p.toml"), &d).unwrap_err();
            assert!(e.reason.contains(what), "{to}: {e}");
            assert!(e.line >= 2 && e.line <= 8, "{to}: {e}");
        }
        let listed = CORRIDOR.replace("NATIONALITY = \"requester\"", "NATIONALITY = [\"EGY\", \"JOR\"]");
        let p = Policy::parse(&listed, Path::new("p.toml"), &d).unwrap();
        assert_eq!(p.rules[0].rows_text(None), ["NATIONALITY = EGY, JOR"]);
    }

    #[test]
    fn periods() {
        assert!(period_in("2024", Some("2015"), Some("2024")));
        assert!(period_in("2024-Q3", Some("2015"), Some("2024")));
        assert!(!period_in("2025", Some("2015"), Some("2024")));
        assert!(!period_in("2014-Q4", Some("2015"), None));
        assert!(period_in("2015-Q1", Some("2015"), None));
        assert!(same_or_within("2025-Q1", "2025"));
        assert!(!same_or_within("20251", "2025"));
    }
}
