//! Part-of-speech tags of a sentence the way npm `pos`'s Brill tagger assigns them
//! (`POSTagger.js` with `BrillTransformationRules.js`): each word's most likely lexicon tag
//! (looked up as written, then in lower case), unknown words `NN` (`NNP` when capitalised, the
//! start state of Brill's original tagger), then the transformation rules applied word by word
//! from the left:
//!
//! 1. after `DT`, `VBD` / `VBP` / `VB` becomes `NN`;
//! 2. a noun containing `.` becomes `URL` (two letters in a row) or `CD`; a noun that starts
//!    like a number (JavaScript `parseFloat`) becomes `CD`;
//! 3. a noun ending in `ed` becomes `VBN`;
//! 4. any word ending in `ly` becomes `RB`;
//! 5. `NN` / `NNS` (any `NN*`) ending in `al` becomes `JJ`;
//! 6. `NN*` after `would` becomes `VB`;
//! 7. `NN` ending in `s` becomes `NNS`;
//! 8. `NN*` ending in `ing` becomes `VBG`.

use crate::lexicon::Lexicon;

/// The tags of `words`, one per word.
pub fn tag_sentence(lexicon: &Lexicon, words: &[&str]) -> Vec<String> {
    let mut tags: Vec<String> = words.iter().map(|w| initial_tag(lexicon, w)).collect();
    for i in 0..words.len() {
        apply_rules(words, &mut tags, i);
    }
    tags
}

fn initial_tag(lexicon: &Lexicon, word: &str) -> String {
    match lexicon.lookup(word) {
        Some(tags) => tags[0].clone(),
        None if word.chars().next().is_some_and(char::is_uppercase) => "NNP".into(),
        None => "NN".into(),
    }
}

fn apply_rules(words: &[&str], tags: &mut [String], i: usize) {
    let w = words[i];
    let prev_tag = i.checked_sub(1).map(|p| tags[p].clone());
    // Rule 1.
    if prev_tag.as_deref() == Some("DT") && matches!(tags[i].as_str(), "VBD" | "VBP" | "VB") {
        tags[i] = "NN".into();
    }
    // Rule 2.
    if tags[i].starts_with('N') {
        if w.contains('.') {
            let two_letters = w
                .as_bytes()
                .windows(2)
                .any(|p| p[0].is_ascii_alphabetic() && p[1].is_ascii_alphabetic());
            tags[i] = if two_letters { "URL" } else { "CD" }.into();
        }
        if starts_like_number(w) {
            tags[i] = "CD".into();
        }
    }
    // Rule 3.
    if tags[i].starts_with('N') && w.ends_with("ed") {
        tags[i] = "VBN".into();
    }
    // Rule 4.
    if w.ends_with("ly") {
        tags[i] = "RB".into();
    }
    // Rule 5.
    if tags[i].starts_with("NN") && w.ends_with("al") {
        tags[i] = "JJ".into();
    }
    // Rule 6.
    if i > 0 && tags[i].starts_with("NN") && words[i - 1].to_lowercase() == "would" {
        tags[i] = "VB".into();
    }
    // Rule 7.
    if tags[i] == "NN" && w.ends_with('s') {
        tags[i] = "NNS".into();
    }
    // Rule 8.
    if tags[i].starts_with("NN") && w.ends_with("ing") {
        tags[i] = "VBG".into();
    }
}

/// Whether JavaScript's `parseFloat(word)` would give a number: optional leading whitespace and
/// sign, then a digit, a `.` followed by a digit, or `Infinity`.
fn starts_like_number(word: &str) -> bool {
    let s = word.trim_start();
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let b = s.as_bytes();
    match b.first() {
        Some(c) if c.is_ascii_digit() => true,
        Some(b'.') => b.get(1).is_some_and(u8::is_ascii_digit),
        _ => s.starts_with("Infinity"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn lexicon() -> Lexicon {
        let text = r#"module.exports = {
            "the": ["DT"], "book": ["NN", "VB"], "red": ["JJ"], "run": ["VB", "NN"],
            "would": ["MD"], "cook": ["NN", "VB"], "films": ["NNS"], "U.S.": ["NNP"],
            "i": ["PRP"], "went": ["VBD"]
        };"#;
        Lexicon::parse(Path::new("lexicon.js"), text).unwrap()
    }

    fn tags(words: &[&str]) -> Vec<String> {
        tag_sentence(&lexicon(), words)
    }

    #[test]
    fn lexicon_then_unknown_word_rules() {
        // Known words take their first tag; lower case is tried second.
        assert_eq!(tags(&["The", "red", "book"]), ["DT", "JJ", "NN"]);
        // Unknown: NN, capitalised NNP; suffix rules on nouns.
        assert_eq!(
            tags(&["zorp", "Zorp", "zorped", "zorply", "zorpal", "zorps", "zorping"]),
            ["NN", "NNP", "VBN", "RB", "JJ", "NNS", "VBG"]
        );
        // Numbers and dotted words.
        assert_eq!(
            tags(&["5.2", "42", "-3x", "www.kd.org", "U.S."]),
            ["CD", "CD", "CD", "URL", "CD"]
        );
        // Context: DT + VB -> NN; would + noun -> VB.
        assert_eq!(tags(&["the", "run"]), ["DT", "NN"]);
        assert_eq!(tags(&["would", "cook"]), ["MD", "VB"]);
        assert_eq!(tags(&["i", "went"]), ["PRP", "VBD"]);
    }
}
