//! What disclosure control knows about a group of records (an "atom"):
//! the scan over a table computes these, the rules read them.

/// How many of the largest contributions an atom keeps (enough for the
/// (n,k) rule with n ≤ 4 and the p% rule).
pub const TOP_K: usize = 4;

/// What one atom holds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AtomStats {
    /// Records (contributors).
    pub n: u64,
    /// Sum of weights (= n when the table has none).
    pub w: f64,
    /// Sum of record keys, mod 256 (the cell key of counts).
    pub key: u8,
    /// Sum of the records' 64-bit keys, mod 2^64: names the record set for
    /// the magnitude noise, which must not repeat across 256 values.
    pub wkey: u64,
    /// Sums of the contributions (value × weight) of `values`.
    pub s: [f64; 2],
    /// Largest absolute contributions of `values[0]`, descending.
    pub top: [f64; TOP_K],
    /// The same for `values[1]` (a ratio's denominator).
    pub top2: [f64; TOP_K],
}

impl AtomStats {
    pub fn add(&mut self, other: &AtomStats) {
        self.n += other.n;
        self.w += other.w;
        self.key = self.key.wrapping_add(other.key);
        self.wkey = self.wkey.wrapping_add(other.wkey);
        self.s[0] += other.s[0];
        self.s[1] += other.s[1];
        for v in other.top {
            push_top(&mut self.top, v);
        }
        for v in other.top2 {
            push_top(&mut self.top2, v);
        }
    }
    /// Counts a contribution among the largest of `values[0]`.
    pub fn push_top(&mut self, v: f64) {
        push_top(&mut self.top, v);
    }
    /// Counts a contribution among the largest of `values[1]`.
    pub fn push_top2(&mut self, v: f64) {
        push_top(&mut self.top2, v);
    }
}

fn push_top(top: &mut [f64; TOP_K], v: f64) {
    if v <= top[TOP_K - 1] {
        return;
    }
    let mut i = TOP_K - 1;
    while i > 0 && top[i - 1] < v {
        top[i] = top[i - 1];
        i -= 1;
    }
    top[i] = v;
}
