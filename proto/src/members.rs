//! The member list of a federated request, made safe to act on.
//!
//! Every way of asking the hub (gRPC, the JSON API, the dashboard, the SDMX
//! REST key) ends in one list of member codes. A code named twice would be
//! asked twice, summed twice into a regional aggregate (while `covers`
//! shows it once) and written twice into that node's log; so the list is
//! reduced to distinct codes before anything fans out or is cached, and a
//! list longer than the hub's whole membership is refused outright: no
//! honest request needs it, and it bounds the work one request can cause.
//! Pure, so the hub and the fuzzer run the same code.

/// Why a member list is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembersError {
    /// More codes named than the hub has members (duplicates included).
    #[error("the request names {named} members but this hub federates {configured}: name each member once (or none, for all)")]
    TooMany { named: usize, configured: usize },
}

/// The distinct codes of `named`, in the order first named.
///
/// Duplicates are dropped rather than refused: `MAR+MAR` in an SDMX key or
/// `["MAR", "MAR"]` from a script means "MAR", and answering it as such is
/// both what the caller meant and harmless. The cap is on the list as
/// named, so a request cannot make the hub walk an unbounded list.
pub fn distinct_members(named: &[String], configured: usize) -> Result<Vec<String>, MembersError> {
    if named.len() > configured {
        return Err(MembersError::TooMany { named: named.len(), configured });
    }
    let mut out: Vec<String> = Vec::with_capacity(named.len());
    for code in named {
        if !out.contains(code) {
            out.push(code.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn v(codes: &[&str]) -> Vec<String> {
        codes.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn repeats_count_once_in_first_named_order() {
        assert_eq!(distinct_members(&v(&["MAR", "EGY", "MAR"]), 3).unwrap(), v(&["MAR", "EGY"]));
        assert_eq!(distinct_members(&[], 0).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn longer_than_the_membership_is_refused() {
        let e = distinct_members(&v(&["MAR"; 4]), 3).unwrap_err();
        assert_eq!(e, MembersError::TooMany { named: 4, configured: 3 });
        assert!(e.to_string().contains("names 4 members but this hub federates 3"), "{e}");
    }
}
