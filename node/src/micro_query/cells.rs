//! Stage 4: every cell of the answer (margins included), each a union of
//! atoms with its statistics summed from theirs.

use std::collections::BTreeSet;

use crate::disclosure::{AtomStats, Target};
use crate::ledger::{self, BoxDef};
use crate::microdata::{Schema, TableMeta};

use super::atoms::{Atoms, Sets, sets_to_box};
use super::request::{Request, category_indices};

/// One cell.
#[derive(Debug, Clone)]
pub struct CellDef {
    /// Per breakdown dimension: code index, or None for the total.
    pub coords: Vec<Option<u32>>,
    pub period: u32,
    /// The cell's box as code-index sets (what it restricts).
    pub sets: Sets,
    /// The same box for the ledger, with the table's version.
    pub boxdef: BoxDef,
    pub target: Target,
    pub stats: AtomStats,
}

impl CellDef {
    /// A margin: a total along some breakdown dimension.
    pub fn margin(&self) -> bool {
        self.coords.iter().any(Option::is_none)
    }
}

/// The codes per breakdown axis (then its total), in order.
pub fn axes(schema: &Schema, req: &Request) -> Vec<Vec<Option<u32>>> {
    req.breakdown
        .iter()
        .map(|c| {
            let codes: Vec<u32> = req.filters.get(c).map_or_else(|| category_indices(schema, *c).collect(), |f| f.iter().copied().collect());
            codes.into_iter().map(Some).chain(std::iter::once(None)).collect()
        })
        .collect()
}

/// Builds every cell over `periods`. Categories no record of the granted
/// periods holds are left out (a Moroccan table has no Egyptian regions;
/// that they are empty is no secret), unless `list_empty` (differential
/// privacy, where even that would be read off exact data). Filters are
/// ignored when judging that on purpose: dropping a category because no
/// record of a filtered group holds it would reveal that zero.
///
/// `period_names` names every period index in `periods`: the table's own,
/// then any asked for that hold no record (answered under differential
/// privacy, whose noise must not depend on whether a period has data).
pub fn build(schema: &Schema, meta: &TableMeta, period_names: &[String], req: &Request, periods: &[u32], atoms: &Atoms, list_empty: bool) -> Vec<CellDef> {
    let ncols = schema.categorical.len();
    let per_axis = axes(schema, req);
    let mut universe: Sets = vec![None; ncols + 1];
    universe[0] = Some(periods.iter().copied().collect());
    let inside = atoms.target_of(&universe).atoms;
    let occurs: Vec<Vec<bool>> = req
        .breakdown
        .iter()
        .map(|c| {
            let Some((pos, (_, map, _))) = atoms.grouping.dims.iter().enumerate().find(|(_, d)| d.0 == *c) else { return Vec::new() };
            let held: BTreeSet<u32> = inside.iter().map(|a| atoms.grouping.classes_of(*a as usize)[pos]).collect();
            map.iter().map(|class| list_empty || held.contains(class)).collect()
        })
        .collect();
    let per_period: usize = per_axis.iter().map(Vec::len).product();
    let mut cells = Vec::with_capacity(per_period * periods.len());
    for &period in periods {
        for flat in 0..per_period {
            // Mixed radix over the axes, the last axis fastest.
            let mut rest = flat;
            let mut coords = vec![None; req.breakdown.len()];
            for k in (0..req.breakdown.len()).rev() {
                coords[k] = per_axis[k][rest % per_axis[k].len()];
                rest /= per_axis[k].len();
            }
            if coords.iter().zip(&occurs).any(|(c, held)| c.is_some_and(|code| !held.get(code as usize).copied().unwrap_or(false))) {
                continue;
            }
            let mut sets: Sets = vec![None; ncols + 1];
            sets[0] = Some(BTreeSet::from([period]));
            for (c, f) in &req.filters {
                sets[*c] = Some(f.clone());
            }
            for (k, c) in req.breakdown.iter().enumerate() {
                if let Some(code) = coords[k] {
                    sets[*c] = Some(BTreeSet::from([code]));
                }
            }
            let target = atoms.target_of(&sets);
            let stats = atoms.stats_of(&target);
            let mut boxdef = sets_to_box(schema, period_names, &sets);
            boxdef.insert(ledger::VERSION.to_owned(), vec![meta.imports.to_string()]);
            cells.push(CellDef { coords, period, sets, boxdef, target, stats });
        }
    }
    cells
}
