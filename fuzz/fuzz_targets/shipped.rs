//! The shipped data dictionary, loaded once per fuzzing process (shared by
//! the targets that check input against it).

use std::sync::OnceLock;

use tabadul_proto::Dictionary;

pub fn dict() -> &'static Dictionary {
    static DICT: OnceLock<Dictionary> = OnceLock::new();
    DICT.get_or_init(|| {
        let text = include_str!("../../deploy/dictionary.toml");
        Dictionary::parse(text, "deploy/dictionary.toml").expect("the shipped dictionary loads")
    })
}
