//! SYNTHETIC job-seeker records (PES_JOBSEEKER_RECORDS) for the tests, the
//! demo and the benchmark. Invented people: deterministic, skewed like a real
//! register (few managers and armed-forces occupations, some small regions),
//! with a few planted groups that disclosure control must protect.

use std::fmt::Write as _;

/// One record.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSeeker {
    pub period: &'static str,
    pub sex: &'static str,
    pub age: &'static str,
    pub region: &'static str,
    pub education: &'static str,
    pub ocu: &'static str,
    pub months: f64,
}

pub const REGIONS: [&str; 4] = ["MA-01", "MA-04", "MA-06", "MA-03"];
pub const OCUS: [&str; 11] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "X"];
const EDUCATION: [&str; 5] = ["X0T1", "X2", "X3T4", "X5T8", "XUNK"];

/// A small deterministic generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `n` records for one period. Occupation "0" (armed forces) is never drawn
/// at random: the planted records below are the only ones, so the tests know
/// exactly which groups are small.
pub fn jobseekers(n: usize, seed: u64) -> Vec<JobSeeker> {
    let mut rng = Rng::new(seed);
    // Region weights: MA-04 is small.
    let region_cdf = [0.30, 0.34, 0.80, 1.0];
    let mut out = Vec::with_capacity(n + 64);
    for _ in 0..n {
        let u = rng.unit();
        let region = REGIONS[region_cdf.iter().position(|c| u < *c).unwrap_or(3)];
        let ocu = OCUS[1 + rng.below(10)];
        out.push(JobSeeker {
            period: "2025",
            sex: if rng.unit() < 0.45 { "F" } else { "M" },
            age: if rng.unit() < 0.35 { "Y15T24" } else { "Y_GE25" },
            region,
            education: EDUCATION[rng.below(EDUCATION.len())],
            ocu,
            months: (1.0 + rng.unit() * 23.0).round(),
        });
    }
    out.extend(planted());
    out
}

/// `n` random records over `regions`, plus three people in armed-forces
/// occupations in the first region (a small cell to be withheld): for the
/// demo, where each member has its own regions.
pub fn jobseekers_in(regions: &[&'static str], n: usize, seed: u64) -> Vec<JobSeeker> {
    let mut out = jobseekers(n, seed);
    out.truncate(n);
    let mut rng = Rng::new(seed ^ 0xA5A5);
    for r in &mut out {
        r.region = regions[rng.below(regions.len())];
    }
    for i in 0..3 {
        out.push(JobSeeker {
            period: "2025",
            sex: if i == 0 { "F" } else { "M" },
            age: "Y_GE25",
            region: regions[0],
            education: "X3T4",
            ocu: "0",
            months: 6.0,
        });
    }
    out
}

/// The groups disclosure control must protect.
/// - one woman in MA-04 in armed-forces occupations (the differencing
///   target), registered 97 months;
/// - three people of occupation 0 in MA-06;
/// - twelve in occupation 0 in MA-01, one of whom dominates the months;
pub fn planted() -> Vec<JobSeeker> {
    let person = |region, sex, months| JobSeeker { period: "2025", sex, age: "Y_GE25", region, education: "X3T4", ocu: "0", months };
    let mut out = vec![person("MA-04", "F", 97.0)];
    out.extend((0..3).map(|i| person("MA-06", if i == 0 { "F" } else { "M" }, 5.0)));
    out.extend((0..11).map(|i| person("MA-01", if i % 2 == 0 { "F" } else { "M" }, 2.0)));
    out.push(person("MA-01", "M", 900.0));
    out
}

pub const HEADER: &str = "TIME_PERIOD,SEX,AGE,REGION,EDUCATION,OCU,MONTHS_REGISTERED";

pub fn to_csv(records: &[JobSeeker]) -> String {
    let mut s = String::with_capacity(records.len() * 40);
    s.push_str(HEADER);
    s.push('\n');
    for r in records {
        let _ = writeln!(s, "{},{},{},{},{},{},{}", r.period, r.sex, r.age, r.region, r.education, r.ocu, r.months);
    }
    s
}

/// The exact count of records matching a predicate (the truth the attacker wants).
pub fn count(records: &[JobSeeker], f: impl Fn(&JobSeeker) -> bool) -> u64 {
    records.iter().filter(|r| f(r)).count() as u64
}

/// The attacker's atoms: region × occupation × sex.
pub const ATOMS: usize = REGIONS.len() * OCUS.len() * 2;

/// The atom of a region, occupation and sex.
pub fn atom(region: &str, ocu: &str, sex: &str) -> usize {
    let r = REGIONS.iter().position(|x| *x == region).unwrap_or(0);
    let o = OCUS.iter().position(|x| *x == ocu).unwrap_or(0);
    (r * OCUS.len() + o) * 2 + usize::from(sex == "M")
}

/// The atoms a released cell covers, as its requester can tell: the
/// query's filters, then the cell's own codes (a total code covers all).
pub fn atoms_of(q: &tabadul_proto::pb::Query, d: &tabadul_proto::pb::Decision, c: &tabadul_proto::pb::Cell) -> Vec<usize> {
    let mut allowed: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    allowed.insert("REGION", REGIONS.to_vec());
    allowed.insert("OCU", OCUS.to_vec());
    allowed.insert("SEX", vec!["F", "M"]);
    for f in &q.filters {
        allowed.insert(f.dimension.as_str(), f.codes.iter().map(String::as_str).collect());
    }
    for (dim, code) in d.dimensions.iter().zip(&c.key) {
        if let Some(a) = allowed.get_mut(dim.as_str())
            && !matches!(code.as_str(), "_T" | "T")
        {
            *a = vec![code.as_str()];
        }
    }
    let mut out = Vec::new();
    for r in &allowed["REGION"] {
        for o in &allowed["OCU"] {
            for s in &allowed["SEX"] {
                out.push(atom(r, o, s));
            }
        }
    }
    out
}
