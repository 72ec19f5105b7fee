//! The data dictionary: one versioned TOML file shared by hub and nodes.
//!
//! It defines codelists, dimensions (each bound to a codelist, most with a
//! total code), dataflows (their dimensions in SDMX key order, TIME_PERIOD
//! implied last; whether the measure is a count or a rate of two other
//! dataflows) and the mapping from ILOSTAT bulk-download codes. Loading
//! checks every cross-reference, so a node never runs with a dictionary that
//! points at something undefined.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{REF_AREA, TIME_PERIOD};

/// Why a dictionary could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DictionaryError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has the wrong shape (the message has the line).
    #[error("{source_name}: {message}")]
    Syntax { source_name: String, message: String },
    /// A cross-reference points at nothing, or a rule of the format is broken.
    #[error("{source_name}: {item}: {reason}")]
    Invalid { source_name: String, item: String, reason: String },
}

/// What a dataflow's observations measure.
#[derive(Debug, Clone, PartialEq)]
pub enum Measure {
    /// Counts (persons, vacancies, permits): regional totals are sums.
    Count,
    /// `numerator / denominator * scale`, both being count dataflows with
    /// the same dimensions. Regional figures are recomputed from them, never
    /// averaged.
    Rate { numerator: String, denominator: String, scale: f64 },
    /// Computed by the hub from both sides of a labour-migration corridor
    /// (each side an ordinary dataflow answered by its member); no node
    /// holds it. Its dimensions are REF_AREA (the origin), DESTINATION and
    /// MIRROR_MEASURE.
    Mirror,
}

#[derive(Debug, Clone)]
pub struct Codelist {
    pub id: String,
    pub name: String,
    pub codes: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Dimension {
    pub id: String,
    pub name: String,
    pub codelist: String,
    /// The code meaning "all of them" (`_T`, `T`, `Y_GE15`); a dimension that
    /// is not broken down is held at it.
    pub total: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Dataflow {
    pub id: String,
    pub name: String,
    pub unit: String,
    /// Series-key dimensions, REF_AREA first; TIME_PERIOD is implied after them.
    pub dimensions: Vec<String>,
    pub measure: Measure,
    /// Default SDMX UNIT_MULT (3 = thousands).
    pub unit_mult: i32,
    pub ilostat_indicator: Option<String>,
}

impl Dataflow {
    /// Position of a dimension in the series key.
    pub fn position(&self, dimension: &str) -> Option<usize> {
        self.dimensions.iter().position(|d| d == dimension)
    }
}

/// A table of unit records (survey respondents, registered job seekers,
/// work permits) that never leaves the node: only protected aggregates of
/// it do. Its categorical columns are dictionary dimensions; its numeric
/// columns are variables to sum, average or divide.
#[derive(Debug, Clone)]
pub struct MicroTable {
    pub id: String,
    pub name: String,
    /// What one record is ("persons", "vacancies", "permits"): the
    /// contributors that disclosure control counts.
    pub unit: String,
    /// Categorical columns, each a dimension with a total code, in file order.
    pub dimensions: Vec<String>,
    /// Numeric columns: id and name.
    pub variables: Vec<(String, String)>,
    /// The survey-weight column, for tables that estimate a population.
    pub weight: Option<String>,
}

impl MicroTable {
    pub fn has_variable(&self, id: &str) -> bool {
        self.variables.iter().any(|(v, _)| v == id)
    }
}

/// A loaded, validated data dictionary.
#[derive(Debug, Clone)]
pub struct Dictionary {
    pub version: String,
    pub agency: String,
    /// Hex SHA-256 of the file, so two parties can tell they hold the same one.
    pub digest: String,
    codelists: BTreeMap<String, Codelist>,
    dimensions: BTreeMap<String, Dimension>,
    dataflows: BTreeMap<String, Dataflow>,
    microdata: BTreeMap<String, MicroTable>,
    ilostat_codes: HashMap<String, (String, String)>,
    ilostat_indicators: HashMap<String, String>,
    /// Arabic names, keyed as [`Dictionary::name_ar`] documents.
    names_ar: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDictionary {
    version: String,
    agency: String,
    codelists: BTreeMap<String, RawCodelist>,
    dimensions: BTreeMap<String, RawDimension>,
    dataflows: BTreeMap<String, RawDataflow>,
    #[serde(default)]
    microdata: BTreeMap<String, RawMicroTable>,
    #[serde(default)]
    ilostat: RawIlostat,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMicroTable {
    name: String,
    name_ar: Option<String>,
    unit: String,
    dimensions: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    weight: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCodelist {
    name: String,
    name_ar: Option<String>,
    codes: BTreeMap<String, String>,
    /// Arabic names of (some of) the codes.
    #[serde(default)]
    codes_ar: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDimension {
    name: String,
    name_ar: Option<String>,
    codelist: String,
    total: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataflow {
    name: String,
    name_ar: Option<String>,
    unit: String,
    dimensions: Vec<String>,
    measure: String,
    numerator: Option<String>,
    denominator: Option<String>,
    scale: Option<f64>,
    #[serde(default)]
    unit_mult: i32,
    ilostat: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIlostat {
    #[serde(default)]
    codes: BTreeMap<String, RawIlostatCode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIlostatCode {
    dimension: String,
    code: String,
}

impl Dictionary {
    pub fn load(path: &Path) -> Result<Self, DictionaryError> {
        let text = std::fs::read_to_string(path).map_err(|source| DictionaryError::Io { path: path.to_owned(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, source_name: &str) -> Result<Self, DictionaryError> {
        let raw: RawDictionary = toml::from_str(text).map_err(|e| DictionaryError::Syntax { source_name: source_name.to_owned(), message: e.to_string() })?;
        let invalid = |item: String, reason: String| DictionaryError::Invalid { source_name: source_name.to_owned(), item, reason };

        let mut names_ar = HashMap::new();
        for (id, c) in &raw.codelists {
            if let Some(n) = &c.name_ar {
                names_ar.insert(format!("codelist:{id}"), n.clone());
            }
            for (code, n) in &c.codes_ar {
                if !c.codes.contains_key(code) {
                    return Err(invalid(format!("codelists.{id}.codes_ar"), format!("{code:?} is not a code of {id}")));
                }
                names_ar.insert(format!("code:{id}:{code}"), n.clone());
            }
        }
        for (kind, id, name) in raw
            .dimensions
            .iter()
            .map(|(id, d)| ("dimension", id, &d.name_ar))
            .chain(raw.dataflows.iter().map(|(id, f)| ("dataflow", id, &f.name_ar)))
            .chain(raw.microdata.iter().map(|(id, t)| ("dataflow", id, &t.name_ar)))
        {
            if let Some(n) = name {
                names_ar.insert(format!("{kind}:{id}"), n.clone());
            }
        }
        let codelists: BTreeMap<String, Codelist> =
            raw.codelists.into_iter().map(|(id, c)| (id.clone(), Codelist { id, name: c.name, codes: c.codes })).collect();
        for cl in codelists.values() {
            if cl.codes.is_empty() {
                return Err(invalid(format!("codelists.{}", cl.id), "has no codes".into()));
            }
            if let Some(bad) = cl.codes.keys().find(|c| !valid_code(c)) {
                return Err(invalid(format!("codelists.{}", cl.id), format!("code {bad:?} must be 1-32 characters of A-Z, a-z, 0-9, '_' and '-'")));
            }
        }

        let mut dimensions = BTreeMap::new();
        for (id, d) in raw.dimensions {
            let item = format!("dimensions.{id}");
            if id == TIME_PERIOD {
                return Err(invalid(item, "TIME_PERIOD is implied and must not be declared".into()));
            }
            let cl = codelists.get(&d.codelist).ok_or_else(|| invalid(item.clone(), format!("unknown codelist {:?}", d.codelist)))?;
            if let Some(total) = &d.total
                && !cl.codes.contains_key(total)
            {
                return Err(invalid(item, format!("total code {total:?} is not in {}", cl.id)));
            }
            dimensions.insert(id.clone(), Dimension { id, name: d.name, codelist: d.codelist, total: d.total });
        }
        if !dimensions.contains_key(REF_AREA) {
            return Err(invalid("dimensions".into(), "REF_AREA must be declared".into()));
        }

        let mut dataflows = BTreeMap::new();
        let mut ilostat_indicators = HashMap::new();
        for (id, f) in &raw.dataflows {
            let item = format!("dataflows.{id}");
            if !valid_code(id) {
                return Err(invalid(item, "a dataflow id is 1-32 characters of A-Z, 0-9, '_' and '-'".into()));
            }
            if f.dimensions.first().map(String::as_str) != Some(REF_AREA) {
                return Err(invalid(item, "the first dimension must be REF_AREA".into()));
            }
            for (i, d) in f.dimensions.iter().enumerate() {
                let dim = dimensions.get(d).ok_or_else(|| invalid(item.clone(), format!("unknown dimension {d:?}")))?;
                if f.dimensions[..i].contains(d) {
                    return Err(invalid(item.clone(), format!("dimension {d} listed twice")));
                }
                // (A mirror's measures are never summed away: the hub
                // writes each one.)
                if i > 0 && dim.total.is_none() && f.measure != "mirror" {
                    return Err(invalid(item.clone(), format!("dimension {d} has no total code, so it cannot be aggregated away")));
                }
            }
            let measure = match f.measure.as_str() {
                "count" => Measure::Count,
                "rate" => {
                    let (Some(numerator), Some(denominator)) = (&f.numerator, &f.denominator) else {
                        return Err(invalid(item, "a rate needs numerator and denominator".into()));
                    };
                    for part in [numerator, denominator] {
                        let other =
                            raw.dataflows.get(part).ok_or_else(|| invalid(item.clone(), format!("unknown dataflow {part:?} in numerator/denominator")))?;
                        if other.measure != "count" || other.dimensions != f.dimensions {
                            return Err(invalid(item.clone(), format!("{part} must be a count with the same dimensions as {id}")));
                        }
                    }
                    Measure::Rate { numerator: numerator.clone(), denominator: denominator.clone(), scale: f.scale.unwrap_or(100.0) }
                }
                "mirror" if f.dimensions == [REF_AREA, "DESTINATION", "MIRROR_MEASURE"] => Measure::Mirror,
                "mirror" => return Err(invalid(item, "a mirror's dimensions are REF_AREA, DESTINATION, MIRROR_MEASURE".into())),
                other => return Err(invalid(item, format!("measure {other:?} must be count, rate or mirror"))),
            };
            if let Some(ind) = &f.ilostat
                && let Some(prev) = ilostat_indicators.insert(ind.clone(), id.clone())
            {
                return Err(invalid(item, format!("ILOSTAT indicator {ind} already maps to {prev}")));
            }
            dataflows.insert(
                id.clone(),
                Dataflow {
                    id: id.clone(),
                    name: f.name.clone(),
                    unit: f.unit.clone(),
                    dimensions: f.dimensions.clone(),
                    measure,
                    unit_mult: f.unit_mult,
                    ilostat_indicator: f.ilostat.clone(),
                },
            );
        }

        let mut microdata = BTreeMap::new();
        for (id, t) in raw.microdata {
            let item = format!("microdata.{id}");
            if !valid_code(&id) {
                return Err(invalid(item, "a table id is 1-32 characters of A-Z, 0-9, '_' and '-'".into()));
            }
            if dataflows.contains_key(&id) {
                return Err(invalid(item, "a dataflow has the same id; queries could not tell them apart".into()));
            }
            if t.dimensions.is_empty() {
                return Err(invalid(item, "a microdata table needs at least one dimension".into()));
            }
            let mut columns = std::collections::BTreeSet::from([TIME_PERIOD.to_owned()]);
            for d in &t.dimensions {
                let dim = dimensions.get(d).ok_or_else(|| invalid(item.clone(), format!("unknown dimension {d:?}")))?;
                if d == REF_AREA || dim.total.is_none() {
                    return Err(invalid(item.clone(), format!("dimension {d} cannot be a record column (REF_AREA is the member; others need a total code)")));
                }
                if !columns.insert(d.clone()) {
                    return Err(invalid(item.clone(), format!("column {d} listed twice")));
                }
            }
            for v in t.variables.keys().chain(t.weight.iter()) {
                if !valid_code(v) || !columns.insert(v.clone()) {
                    return Err(invalid(item.clone(), format!("variable {v:?} is not a valid, unique column name")));
                }
            }
            microdata.insert(
                id.clone(),
                MicroTable { id, name: t.name, unit: t.unit, dimensions: t.dimensions, variables: t.variables.into_iter().collect(), weight: t.weight },
            );
        }

        let mut ilostat_codes = HashMap::new();
        for (code, m) in raw.ilostat.codes {
            let item = format!("ilostat.codes.{code}");
            let dim = dimensions.get(&m.dimension).ok_or_else(|| invalid(item.clone(), format!("unknown dimension {:?}", m.dimension)))?;
            if !codelists[&dim.codelist].codes.contains_key(&m.code) {
                return Err(invalid(item, format!("{:?} is not a code of {}", m.code, dim.codelist)));
            }
            ilostat_codes.insert(code, (m.dimension, m.code));
        }

        Ok(Dictionary {
            version: raw.version,
            agency: raw.agency,
            digest: hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes())),
            codelists,
            dimensions,
            dataflows,
            microdata,
            ilostat_codes,
            ilostat_indicators,
            names_ar,
        })
    }

    /// The Arabic name of an item, if the dictionary gives one. `kind` is
    /// `dataflow` (microdata tables too), `dimension`, `codelist`, or
    /// `code` with `id` = `CODELIST:CODE`.
    pub fn name_ar(&self, kind: &str, id: &str) -> Option<&str> {
        self.names_ar.get(&format!("{kind}:{id}")).map(String::as_str)
    }

    /// The codelists, by id.
    pub fn codelists(&self) -> impl Iterator<Item = &Codelist> {
        self.codelists.values()
    }

    pub fn dataflow(&self, id: &str) -> Option<&Dataflow> {
        self.dataflows.get(id)
    }
    pub fn dataflows(&self) -> impl Iterator<Item = &Dataflow> {
        self.dataflows.values()
    }
    /// A microdata table by id.
    pub fn microdata(&self, id: &str) -> Option<&MicroTable> {
        self.microdata.get(id)
    }
    pub fn microdata_tables(&self) -> impl Iterator<Item = &MicroTable> {
        self.microdata.values()
    }
    /// The codes of a dimension's codelist, in codelist order (the order a
    /// microdata column stores them by index).
    pub fn codes_of(&self, dimension: &str) -> Option<Vec<&str>> {
        let d = self.dimensions.get(dimension)?;
        Some(self.codelists.get(&d.codelist)?.codes.keys().map(String::as_str).collect())
    }
    pub fn dimension(&self, id: &str) -> Option<&Dimension> {
        self.dimensions.get(id)
    }
    pub fn codelist(&self, id: &str) -> Option<&Codelist> {
        self.codelists.get(id)
    }
    /// Whether `code` is valid for `dimension`.
    pub fn has_code(&self, dimension: &str, code: &str) -> bool {
        self.dimensions.get(dimension).and_then(|d| self.codelists.get(&d.codelist)).is_some_and(|cl| cl.codes.contains_key(code))
    }
    /// The dataflow an ILOSTAT indicator id maps to.
    pub fn dataflow_for_ilostat(&self, indicator: &str) -> Option<&Dataflow> {
        self.ilostat_indicators.get(indicator).and_then(|id| self.dataflows.get(id))
    }
    /// The (dimension, code) an ILOSTAT `sex`/`classif1`/`classif2` code maps to.
    pub fn ilostat_code(&self, code: &str) -> Option<(&str, &str)> {
        self.ilostat_codes.get(code).map(|(d, c)| (d.as_str(), c.as_str()))
    }
}

fn valid_code(code: &str) -> bool {
    !code.is_empty() && code.len() <= 32 && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
version = "test-1"
agency = "ALO"
[codelists.CL_AREA]
name = "Areas"
codes = { MAR = "Morocco", EGY = "Egypt" }
[codelists.CL_SEX]
name = "Sex"
codes = { T = "Total", M = "Male", F = "Female" }
[dimensions.REF_AREA]
name = "Reference area"
codelist = "CL_AREA"
[dimensions.SEX]
name = "Sex"
codelist = "CL_SEX"
total = "T"
[dataflows.UNE_PERS]
name = "Unemployed persons"
unit = "persons"
dimensions = ["REF_AREA", "SEX"]
measure = "count"
unit_mult = 3
[dataflows.LF_PERS]
name = "Labour force"
unit = "persons"
dimensions = ["REF_AREA", "SEX"]
measure = "count"
[dataflows.UNE_RATE]
name = "Unemployment rate"
unit = "percent"
dimensions = ["REF_AREA", "SEX"]
measure = "rate"
numerator = "UNE_PERS"
denominator = "LF_PERS"
ilostat = "UNE_DEAP_SEX_RT"
[ilostat.codes]
SEX_T = { dimension = "SEX", code = "T" }
"#;

    #[test]
    fn loads_and_answers() {
        let d = Dictionary::parse(SMALL, "small").unwrap();
        assert!(d.has_code("SEX", "F"));
        assert!(!d.has_code("SEX", "X"));
        assert_eq!(d.dataflow_for_ilostat("UNE_DEAP_SEX_RT").unwrap().id, "UNE_RATE");
        assert_eq!(d.ilostat_code("SEX_T"), Some(("SEX", "T")));
        assert!(matches!(d.dataflow("UNE_RATE").unwrap().measure, Measure::Rate { .. }));
    }

    #[test]
    fn rejects_dangling_references() {
        for (from, to, expect) in [
            ("codelist = \"CL_SEX\"", "codelist = \"CL_NOPE\"", "unknown codelist"),
            ("numerator = \"UNE_PERS\"", "numerator = \"NOPE\"", "unknown dataflow"),
            ("total = \"T\"", "total = \"X\"", "total code"),
            ("code = \"T\" }", "code = \"Q\" }", "not a code"),
        ] {
            let text = SMALL.replacen(from, to, 1);
            let err = Dictionary::parse(&text, "small").unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
        }
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = Dictionary::parse("version = \"1\"\nagency = \n", "bad.toml").unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn shipped_dictionary_is_valid() {
        // Unit tests run in the package directory.
        let path = Path::new("../deploy/dictionary.toml");
        let d = Dictionary::load(path).unwrap();
        for flow in ["UNE_RATE", "UNE_PERS", "LF_PERS", "LFPR", "EMP_ECO", "EMP_OCU", "PES_JOBSEEKERS", "PES_VACANCIES", "WP_ISSUED"] {
            assert!(d.dataflow(flow).is_some(), "{flow} missing");
        }
        assert_eq!(d.codelist("CL_AREA").unwrap().codes.len(), 22);
    }
}
