//! Words of a text as byte spans, split the way BERT's basic tokenizer splits (whitespace, then
//! every punctuation character on its own), and texts rebuilt with some words replaced.
//!
//! Copies keep the original's spacing and case everywhere except at the replaced words, so an
//! augmented copy of `"It's a gem."` reads `"It's a jewel."`, not `"it ' s a jewel ."`.

use std::ops::Range;

/// One word: a byte range of its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Word {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Word {
    /// The word's text in `text`.
    pub fn of<'a>(&self, text: &'a str) -> &'a str {
        &text[self.start..self.end]
    }
}

/// Punctuation as BERT's basic tokenizer sees it: ASCII punctuation, and any other character
/// that is neither alphanumeric nor whitespace (curly quotes, dashes, symbols).
pub fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || (!c.is_alphanumeric() && !c.is_whitespace())
}

/// The words of `text`: runs of non-whitespace split around punctuation characters, each
/// punctuation character a word of its own.
pub fn split_words(text: &str) -> Vec<Word> {
    let mut words = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() || is_punctuation(c) {
            if let Some(s) = start.take() {
                words.push(Word { start: s, end: i });
            }
            if !c.is_whitespace() {
                words.push(Word {
                    start: i,
                    end: i + c.len_utf8(),
                });
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        words.push(Word {
            start: s,
            end: text.len(),
        });
    }
    words
}

/// Whether `word` is made of ASCII letters only (TinyBERT's test for a replaceable word).
pub fn is_alphabetic(word: &str) -> bool {
    !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphabetic())
}

/// The text of words `keep` of `text`, with word `i` replaced by `new[i]` where that is `Some`;
/// the characters between kept words are copied as they are.
pub fn render(text: &str, words: &[Word], new: &[Option<String>], keep: Range<usize>) -> String {
    if keep.is_empty() {
        return String::new();
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut at = words[keep.start].start;
    for i in keep {
        let w = words[i];
        out.push_str(&text[at..w.start]);
        match &new[i] {
            Some(r) => out.push_str(r),
            None => out.push_str(w.of(text)),
        }
        at = w.end;
    }
    out
}

/// `candidate` with the capitalisation of `original`'s first letter (an uncased teacher's
/// lower-case candidate for `"Wasabi"` is written `"Sushi"`).
pub fn match_case(original: &str, candidate: &str) -> String {
    let upper = original.chars().next().is_some_and(char::is_uppercase);
    let mut chars = candidate.chars();
    match (upper, chars.next()) {
        (true, Some(first)) => first.to_uppercase().chain(chars).collect(),
        _ => candidate.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<&str> {
        split_words(text).iter().map(|w| w.of(text)).collect()
    }

    #[test]
    fn splits_like_the_basic_tokenizer() {
        assert_eq!(
            texts("The Rock's new ''Conan'' -- 21st."),
            ["The", "Rock", "'", "s", "new", "'", "'", "Conan", "'", "'", "-", "-", "21st", "."]
        );
        assert_eq!(texts("  café’s  "), ["café", "’", "s"]);
        assert!(texts(" \t ").is_empty());
    }

    #[test]
    fn render_keeps_spacing_and_replaces_words() {
        let t = "It's  a gem, truly.";
        let w = split_words(t);
        let mut new = vec![None; w.len()];
        new[4] = Some("jewel".to_string());
        assert_eq!(render(t, &w, &new, 0..w.len()), "It's  a jewel, truly.");
        assert_eq!(render(t, &w, &new, 3..6), "a jewel,");
        assert_eq!(render(t, &w, &new, 2..2), "");
    }

    #[test]
    fn case_and_alphabetic() {
        assert_eq!(match_case("Wasabi", "sushi"), "Sushi");
        assert_eq!(match_case("wasabi", "sushi"), "sushi");
        assert!(is_alphabetic("Conan") && !is_alphabetic("21st") && !is_alphabetic(""));
    }
}
