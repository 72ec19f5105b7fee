//! What the targets share: the shipped data dictionary, loaded once per
//! fuzzing process, and a scratch file for parsers that read from a path.

use std::sync::OnceLock;

use tabadul_proto::Dictionary;

pub fn dict() -> &'static Dictionary {
    static DICT: OnceLock<Dictionary> = OnceLock::new();
    DICT.get_or_init(|| {
        let text = include_str!("../../deploy/dictionary.toml");
        Dictionary::parse(text, "deploy/dictionary.toml").expect("the shipped dictionary loads")
    })
}

/// A file of this process's own, for inputs to parsers that take a path.
#[allow(dead_code)] // not every target reads a file
pub fn scratch(name: &str) -> &'static std::path::Path {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("tabadul-fuzz-{name}-{}.csv", std::process::id())))
}
