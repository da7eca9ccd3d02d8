//! NLTK's English stopword list (the list TinyBERT's augmentation skips), kept as data in
//! `data/stopwords_en.txt`.

use std::collections::HashSet;
use std::sync::OnceLock;

const LIST: &str = include_str!("../data/stopwords_en.txt");

/// The stopwords, lower case.
pub fn stopwords() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        LIST.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    })
}

/// Whether `word` (any case) is a stopword.
pub fn is_stopword(word: &str) -> bool {
    stopwords().contains(word.to_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nltk_list() {
        assert_eq!(stopwords().len(), 179);
        assert!(is_stopword("The") && is_stopword("wouldn't") && is_stopword("ourselves"));
        assert!(!is_stopword("film") && !is_stopword("good"));
    }
}
