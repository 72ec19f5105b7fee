//! SYNTHETIC labour-market data for the demo and the tests.
//!
//! The figures are invented: plausible magnitudes for each member state
//! (working-age population, participation, unemployment by sex and age),
//! internally consistent (totals are sums, rates are unemployed over labour
//! force) and deterministic. They are not statistics of any country.

/// One synthetic observation.
#[derive(Debug, Clone, PartialEq)]
pub struct Obs {
    pub dataflow: &'static str,
    /// Codes in the dataflow's dimension order, REF_AREA first.
    pub key: Vec<String>,
    pub time: String,
    pub value: f64,
    pub unit_mult: i32,
    pub status: &'static str,
}

/// Working-age population (15+, thousands) and a base unemployment rate (%)
/// per member: rough magnitudes only.
const MEMBERS: &[(&str, f64, f64, bool)] = &[
    ("DZA", 32000.0, 11.5, false),
    ("BHR", 1300.0, 1.5, true),
    ("COM", 550.0, 8.0, false),
    ("DJI", 750.0, 26.0, false),
    ("EGY", 75000.0, 7.0, false),
    ("IRQ", 28000.0, 15.5, false),
    ("JOR", 8000.0, 21.0, false),
    ("KWT", 3700.0, 2.2, true),
    ("LBN", 4300.0, 11.0, false),
    ("LBY", 5000.0, 19.0, false),
    ("MRT", 3000.0, 10.5, false),
    ("MAR", 28000.0, 13.0, false),
    ("OMN", 4200.0, 2.0, true),
    ("PSE", 3400.0, 24.0, false),
    ("QAT", 2500.0, 0.2, true),
    ("SAU", 27000.0, 4.5, true),
    ("SOM", 9500.0, 19.0, false),
    ("SDN", 27000.0, 17.0, false),
    ("SYR", 14000.0, 10.0, false),
    ("TUN", 9500.0, 15.5, false),
    ("ARE", 8500.0, 2.8, true),
    ("YEM", 19000.0, 17.5, false),
];

/// Member codes of the 22 ALO member states.
pub fn members() -> Vec<&'static str> {
    MEMBERS.iter().map(|m| m.0).collect()
}

/// ISO 3166-2 regions the dictionary lists for a member.
fn regions(member: &str) -> &'static [&'static str] {
    match member {
        "MAR" => &["MA-01", "MA-03", "MA-04", "MA-06"],
        "EGY" => &["EG-C", "EG-ALX", "EG-GZ"],
        "JOR" => &["JO-AM", "JO-IR", "JO-AZ"],
        "TUN" => &["TN-11", "TN-51", "TN-61"],
        "SAU" => &["SA-01", "SA-02", "SA-04"],
        _ => &[],
    }
}

/// A deterministic number in [0, 1) from a label.
fn noise(label: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in label.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// All synthetic observations of `member` for `years`.
pub fn generate(member: &str, years: std::ops::RangeInclusive<i32>) -> Vec<Obs> {
    let &(_, pop, base_u, gulf) = MEMBERS.iter().find(|m| m.0 == member).expect("an ALO member");
    let mut out = Vec::new();
    let push = |out: &mut Vec<Obs>, flow: &'static str, key: &[&str], year: i32, value: f64, unit_mult: i32| {
        out.push(Obs {
            dataflow: flow,
            key: std::iter::once(member).chain(key.iter().copied()).map(str::to_owned).collect(),
            time: year.to_string(),
            value,
            unit_mult,
            status: if year == *years.end() { "P" } else { "A" },
        });
    };
    for year in years.clone() {
        let growth = 1.0 + 0.02 * f64::from(year - 2024);
        let wobble = |what: &str| 0.9 + 0.2 * noise(&format!("{member}{year}{what}"));
        // By sex (M, F) and age (Y15T24, Y_GE25): population, labour force, unemployed.
        let mut cells = Vec::new();
        for (sex, sex_share, lfpr) in [("M", 0.51, 0.72_f64), ("F", 0.49, if gulf { 0.38 } else { 0.19 })] {
            for (age, age_share, lf_factor, u_factor) in [("Y15T24", 0.24, 0.55, 2.3), ("Y_GE25", 0.76, 1.1, 0.8)] {
                let p = round1(pop * growth * sex_share * age_share);
                let lf = round1(p * (lfpr * lf_factor).min(0.95) * wobble(&format!("lf{sex}{age}")));
                let u_rate = (base_u * u_factor * if sex == "F" { 1.6 } else { 1.0 } * wobble(&format!("u{sex}{age}"))).min(60.0);
                let une = round1(lf * u_rate / 100.0);
                cells.push((sex, age, p, lf, une));
            }
        }
        let mut emit = |sex: &str, age: &str, p: f64, lf: f64, une: f64| {
            let p = round1(p);
            let lf = round1(lf);
            let une = round1(une);
            push(&mut out, "POP_WA", &[sex, age, "_T"], year, p, 3);
            push(&mut out, "LF_PERS", &[sex, age, "_T"], year, lf, 3);
            push(&mut out, "UNE_PERS", &[sex, age, "_T"], year, une, 3);
            if lf > 0.0 {
                push(&mut out, "UNE_RATE", &[sex, age, "_T"], year, round1(une / lf * 100.0), 0);
            }
            if p > 0.0 {
                push(&mut out, "LFPR", &[sex, age, "_T"], year, round1(lf / p * 100.0), 0);
            }
        };
        for &(sex, age, p, lf, une) in &cells {
            emit(sex, age, p, lf, une);
        }
        for sex in ["M", "F"] {
            let (p, lf, une) = cells.iter().filter(|c| c.0 == sex).fold((0.0, 0.0, 0.0), |a, c| (a.0 + c.2, a.1 + c.3, a.2 + c.4));
            emit(sex, "Y_GE15", p, lf, une);
        }
        for age in ["Y15T24", "Y_GE25"] {
            let (p, lf, une) = cells.iter().filter(|c| c.1 == age).fold((0.0, 0.0, 0.0), |a, c| (a.0 + c.2, a.1 + c.3, a.2 + c.4));
            emit("T", age, p, lf, une);
        }
        let (p, lf, une) = cells.iter().fold((0.0, 0.0, 0.0), |a, c| (a.0 + c.2, a.1 + c.3, a.2 + c.4));
        emit("T", "Y_GE15", p, lf, une);
        // Regions: labour force and unemployed, all sexes and ages.
        let rs = regions(member);
        for (i, region) in rs.iter().enumerate() {
            let share = (1.0 + i as f64) / (rs.len() as f64 * (rs.len() as f64 + 1.0) / 2.0);
            let rlf = round1(lf * share);
            let rune = round1(une * share * wobble(region));
            push(&mut out, "LF_PERS", &["T", "Y_GE15", region], year, rlf, 3);
            push(&mut out, "UNE_PERS", &["T", "Y_GE15", region], year, rune, 3);
            push(&mut out, "UNE_RATE", &["T", "Y_GE15", region], year, round1(rune / rlf * 100.0), 0);
        }
        // Employment by activity (ISIC sections), in thousands.
        let employed = lf - une;
        let sections = ["A", "B", "C", "F", "G", "H", "I", "O", "P", "Q"];
        let weights = [0.18, 0.03, 0.12, 0.11, 0.16, 0.06, 0.05, 0.12, 0.10, 0.07];
        for (s, w) in sections.iter().zip(weights) {
            push(&mut out, "EMP_ECO", &["T", s], year, round1(employed * w * wobble(s)), 3);
        }
        push(&mut out, "EMP_ECO", &["T", "_T"], year, round1(employed), 3);
        // Public employment service: registered job seekers (persons).
        push(&mut out, "PES_JOBSEEKERS", &["T", "Y_GE15", "_T"], year, (une * 1000.0 * 0.35).round(), 0);
        if gulf {
            // Work permits issued to foreign workers by nationality (permits).
            let total = (pop * growth * 12.0 * wobble("wp")).round();
            for (nat, w) in [("IND", 0.3), ("PAK", 0.15), ("BGD", 0.15), ("PHL", 0.1), ("NPL", 0.1), ("EGY", 0.1), ("JOR", 0.03), ("YEM", 0.02)] {
                push(&mut out, "WP_ISSUED", &["T", nat, "_T"], year, (total * w).round(), 0);
            }
            push(&mut out, "WP_ISSUED", &["T", "_T", "_T"], year, total, 0);
        }
    }
    out
}

/// The Gulf members: destinations of the corridors below.
const DESTINATIONS: [&str; 6] = ["SAU", "ARE", "KWT", "QAT", "OMN", "BHR"];

/// SYNTHETIC labour-migration figures of `member` for `years`. A Gulf
/// destination: work-contract visas and the stock of migrant workers by
/// nationality. Any other member, an origin: its nationals placed in jobs
/// abroad by its employment service (a small part of those who go, as in
/// life), and returning workers placed at home, by destination.
pub fn corridors(member: &str, years: std::ops::RangeInclusive<i32>) -> Vec<Obs> {
    let &(_, pop, _, gulf) = MEMBERS.iter().find(|m| m.0 == member).expect("an ALO member");
    let mut out = Vec::new();
    for year in years.clone() {
        let growth = 1.0 + 0.02 * f64::from(year - 2024);
        let wobble = |what: &str| 0.9 + 0.2 * noise(&format!("{member}{year}{what}"));
        let mut push = |flow: &'static str, key: &[&str], value: f64| {
            out.push(Obs {
                dataflow: flow,
                key: std::iter::once(member).chain(key.iter().copied()).map(str::to_owned).collect(),
                time: year.to_string(),
                value: value.round(),
                unit_mult: 0,
                status: if year == *years.end() { "P" } else { "A" },
            });
        };
        if gulf {
            let visas = pop * growth * 10.0 * wobble("visas");
            let stock = pop * growth * 180.0 * wobble("stock");
            let shares = [("IND", 0.3), ("PAK", 0.15), ("BGD", 0.15), ("PHL", 0.1), ("NPL", 0.1), ("EGY", 0.1), ("JOR", 0.03), ("YEM", 0.02)];
            for (nat, w) in shares {
                push("WP_VISAS", &[nat, "T", "_T"], visas * w * wobble(nat));
                push("MIG_STOCK", &[nat, "T", "_T"], stock * w * wobble(&format!("s{nat}")));
            }
            push("WP_VISAS", &["_T", "T", "_T"], visas);
            push("MIG_STOCK", &["_T", "T", "_T"], stock);
        } else {
            let (mut placed, mut returned) = (0.0, 0.0);
            for (i, dest) in DESTINATIONS.iter().enumerate() {
                let p = (pop * growth * 0.08 / (1.0 + i as f64) * wobble(dest)).round();
                let r = (p * 0.2 * wobble(&format!("r{dest}"))).round();
                push("MIG_PLACED_ABROAD", &[dest, "T", "_T", "_T"], p);
                push("MIG_RETURN_PLACED", &[dest, "T"], r);
                placed += p;
                returned += r;
            }
            push("MIG_PLACED_ABROAD", &["_T", "T", "_T", "_T"], placed);
            push("MIG_RETURN_PLACED", &["_T", "T"], returned);
        }
    }
    out
}

/// SDMX-CSV 2.0 text of `obs`.
pub fn to_sdmx_csv(obs: &[Obs]) -> String {
    const DIMS: [&str; 8] = ["REF_AREA", "SEX", "AGE", "REGION", "ECO", "OCU", "NATIONALITY", "DESTINATION"];
    let layout = |flow: &str| -> &'static [&'static str] {
        match flow {
            "MIG_PLACED_ABROAD" => &["REF_AREA", "DESTINATION", "SEX", "OCU", "ECO"],
            "MIG_RETURN_PLACED" => &["REF_AREA", "DESTINATION", "SEX"],
            "WP_VISAS" => &["REF_AREA", "NATIONALITY", "SEX", "OCU"],
            "MIG_STOCK" => &["REF_AREA", "NATIONALITY", "SEX", "ECO"],
            "EMP_ECO" => &["REF_AREA", "SEX", "ECO"],
            "EMP_OCU" => &["REF_AREA", "SEX", "OCU"],
            "PES_VACANCIES" => &["REF_AREA", "ECO", "REGION"],
            "WP_ISSUED" => &["REF_AREA", "SEX", "NATIONALITY", "ECO"],
            _ => &["REF_AREA", "SEX", "AGE", "REGION"],
        }
    };
    let mut s = String::from("STRUCTURE,STRUCTURE_ID,ACTION,");
    s.push_str(&DIMS.join(","));
    s.push_str(",TIME_PERIOD,OBS_VALUE,OBS_STATUS,UNIT_MULT\n");
    for o in obs {
        let dims = layout(o.dataflow);
        s.push_str(&format!("dataflow,ALO:{}(1.0),I", o.dataflow));
        for d in DIMS {
            s.push(',');
            if let Some(i) = dims.iter().position(|x| *x == d) {
                s.push_str(&o.key[i]);
            }
        }
        s.push_str(&format!(",{},{},{},{}\n", o.time, o.value, o.status, o.unit_mult));
    }
    s
}
