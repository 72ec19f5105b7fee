//! The node store's encoding of one observation, in one place: imports
//! produce it, the store reads it back.
//!
//! Key: `dataflow 0x00 code 0x1f code ... 0x1f time_period`, so one
//! dataflow's observations are contiguous and sorted by series key, then
//! period. Value: `f64 LE | unit_mult i8 | obs_status bytes`.

/// Separates the codes of a key (and the period).
pub const KEY_SEP: u8 = 0x1f;

/// Appends a store key to `buf`.
pub fn append_key<'a>(buf: &mut Vec<u8>, dataflow: &str, codes: impl IntoIterator<Item = &'a str>, time: &str) {
    buf.extend_from_slice(dataflow.as_bytes());
    buf.push(0);
    for code in codes {
        buf.extend_from_slice(code.as_bytes());
        buf.push(KEY_SEP);
    }
    buf.extend_from_slice(time.as_bytes());
}

/// Appends a store value to `buf`.
pub fn append_value(buf: &mut Vec<u8>, value: f64, unit_mult: i8, obs_status: &str) {
    buf.extend_from_slice(&value.to_le_bytes());
    buf.push(unit_mult as u8);
    buf.extend_from_slice(obs_status.as_bytes());
}
