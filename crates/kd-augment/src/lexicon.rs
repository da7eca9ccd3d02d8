//! Eric Brill's English lexicon as shipped in npm `pos@0.4.2` (`package/lexicon.js`): a
//! JavaScript object literal mapping each word to its Penn Treebank tags, most likely first
//! (`"hanging": ["VBG", "JJ", "NN"]`).
//!
//! The file is parsed as the object literal it is, not evaluated: an optional
//! `module.exports =` wrapper, `/* */` and `//` comments, double- or single-quoted strings with
//! JavaScript escapes (`\"`, `\\`, `\/`, `\uXXXX`), bare identifier keys, trailing commas and a
//! final `;`. A repeated key keeps its last value, as JavaScript does. Anything else is an
//! error naming the file and line.

use crate::error::{AugmentError, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The lexicon: tags per word, and the words whose most likely tag is each tag.
#[derive(Debug, Clone, Default)]
pub struct Lexicon {
    /// Tags of each word, most likely first (entries with no tags are left out).
    tags: HashMap<String, Vec<String>>,
    /// For each tag, the words whose first tag it is, sorted byte-wise.
    by_first_tag: HashMap<String, Vec<String>>,
    /// For each tag, the words of `by_first_tag` fit to replace a word ([`is_plain_word`]).
    replacements: HashMap<String, Vec<String>>,
}

/// Whether a lexicon word of tag `tag` may replace a word of the same tag: ASCII letters with
/// inner hyphens only (no digits, dots or slashes), and lower case unless the tag is a proper
/// noun's (`NNP`, `NNPS`), so that common words are not swapped for stray capitalised entries.
pub fn is_plain_word(word: &str, tag: &str) -> bool {
    let letters = word.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-')
        && word.bytes().any(|b| b.is_ascii_alphabetic())
        && !word.starts_with('-')
        && !word.ends_with('-');
    letters && (tag.starts_with("NNP") || !word.bytes().any(|b| b.is_ascii_uppercase()))
}

impl Lexicon {
    /// Reads `path`; a missing file is [`AugmentError::MissingLexicon`], which says how to
    /// fetch it.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(AugmentError::MissingLexicon {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|cause| AugmentError::Io {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::parse(path, &text)
    }

    /// Parses the text of `path` (used in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let entries = Parser::new(path, text).object()?;
        let mut tags = HashMap::with_capacity(entries.len());
        for (word, t) in entries {
            if t.is_empty() {
                tags.remove(&word);
            } else {
                tags.insert(word, t);
            }
        }
        let mut by_first_tag: HashMap<String, Vec<String>> = HashMap::new();
        for (word, t) in &tags {
            by_first_tag
                .entry(t[0].clone())
                .or_default()
                .push(word.clone());
        }
        for words in by_first_tag.values_mut() {
            words.sort_unstable();
        }
        let replacements = by_first_tag
            .iter()
            .map(|(tag, words)| {
                let plain = words.iter().filter(|w| is_plain_word(w, tag)).cloned();
                (tag.clone(), plain.collect())
            })
            .collect();
        Ok(Lexicon {
            tags,
            by_first_tag,
            replacements,
        })
    }

    /// Number of words with at least one tag.
    pub fn len(&self) -> usize {
        self.tags.len()
    }

    /// Whether the lexicon has no words.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// The tags of `word` as written, else of its lower-case form (the tagger's lookup).
    pub fn lookup(&self, word: &str) -> Option<&[String]> {
        self.tags
            .get(word)
            .or_else(|| self.tags.get(&word.to_lowercase()))
            .map(Vec::as_slice)
    }

    /// The words whose most likely tag is `tag`, sorted (empty for a tag no word has).
    pub fn words_tagged(&self, tag: &str) -> &[String] {
        self.by_first_tag.get(tag).map_or(&[], Vec::as_slice)
    }

    /// The words of [`Lexicon::words_tagged`] that may replace a word tagged `tag`
    /// ([`is_plain_word`]), sorted.
    pub fn replacements(&self, tag: &str) -> &[String] {
        self.replacements.get(tag).map_or(&[], Vec::as_slice)
    }
}

/// A recursive-descent reader of the object literal, tracking the line for errors.
struct Parser<'a> {
    path: PathBuf,
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
}

impl<'a> Parser<'a> {
    fn new(path: &Path, text: &'a str) -> Self {
        Parser {
            path: path.to_path_buf(),
            chars: text.chars().peekable(),
            line: 1,
        }
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T> {
        Err(AugmentError::Lexicon {
            path: self.path.clone(),
            line: self.line,
            message: message.into(),
        })
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next();
        if c == Some('\n') {
            self.line += 1;
        }
        c
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    /// Skips whitespace and comments.
    fn skip(&mut self) -> Result<()> {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() || c == '\u{feff}' => {
                    self.bump();
                }
                Some('/') => {
                    let start = self.line;
                    self.bump();
                    match self.bump() {
                        Some('/') => while !matches!(self.bump(), Some('\n') | None) {},
                        Some('*') => {
                            let mut prev = ' ';
                            loop {
                                match self.bump() {
                                    Some('/') if prev == '*' => break,
                                    Some(c) => prev = c,
                                    None => {
                                        self.line = start;
                                        return self.err("unterminated /* comment");
                                    }
                                }
                            }
                        }
                        _ => return self.err("unexpected '/'"),
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn expect(&mut self, want: char, what: &str) -> Result<()> {
        self.skip()?;
        match self.peek() {
            Some(c) if c == want => {
                self.bump();
                Ok(())
            }
            Some(c) => self.err(format!("expected {what}, found {c:?}")),
            None => self.err(format!("expected {what}, found the end of the file")),
        }
    }

    fn identifier(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek() {
            if c.is_alphanumeric() || c == '_' || c == '$' || c == '.' {
                s.push(c);
                self.bump();
            } else {
                break;
            }
        }
        s
    }

    /// `module.exports = {...};` or a bare `{...}`, as (word, tags) in file order.
    fn object(&mut self) -> Result<Vec<(String, Vec<String>)>> {
        self.skip()?;
        if self.peek().is_some_and(|c| c.is_alphabetic()) {
            let id = self.identifier();
            if id != "module.exports" {
                return self.err(format!("expected `module.exports =` or '{{', found `{id}`"));
            }
            self.expect('=', "'=' after module.exports")?;
        }
        self.expect('{', "'{' opening the lexicon object")?;
        let mut entries = Vec::new();
        loop {
            self.skip()?;
            if self.peek() == Some('}') {
                self.bump();
                break;
            }
            let word = self.key()?;
            self.expect(':', &format!("':' after the key {word:?}"))?;
            let tags = self.tag_list(&word)?;
            entries.push((word, tags));
            self.skip()?;
            match self.bump() {
                Some(',') => {}
                Some('}') => break,
                Some(c) => {
                    return self.err(format!("expected ',' or '}}' after an entry, found {c:?}"))
                }
                None => return self.err("the lexicon object is not closed ('}' missing)"),
            }
        }
        self.skip()?;
        if self.peek() == Some(';') {
            self.bump();
        }
        self.skip()?;
        if let Some(c) = self.peek() {
            return self.err(format!("unexpected {c:?} after the lexicon object"));
        }
        Ok(entries)
    }

    fn key(&mut self) -> Result<String> {
        match self.peek() {
            Some('"' | '\'') => self.string(),
            Some(c) if c.is_alphabetic() || c == '_' || c == '$' => Ok(self.identifier()),
            Some(c) => self.err(format!("expected a quoted word, found {c:?}")),
            None => self.err("the lexicon object is not closed ('}' missing)"),
        }
    }

    fn tag_list(&mut self, word: &str) -> Result<Vec<String>> {
        self.expect('[', &format!("'[' opening the tags of {word:?}"))?;
        let mut tags = Vec::new();
        loop {
            self.skip()?;
            match self.peek() {
                Some(']') => {
                    self.bump();
                    return Ok(tags);
                }
                Some('"' | '\'') => {
                    let tag = self.string()?;
                    if tag.is_empty() {
                        return self.err(format!("empty tag for {word:?}"));
                    }
                    tags.push(tag);
                }
                Some(c) => {
                    return self.err(format!("expected a quoted tag of {word:?}, found {c:?}"))
                }
                None => {
                    return self.err(format!("the tags of {word:?} are not closed (']' missing)"))
                }
            }
            self.skip()?;
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(']') => {}
                Some(c) => {
                    return self.err(format!(
                        "expected ',' or ']' in the tags of {word:?}, found {c:?}"
                    ))
                }
                None => {
                    return self.err(format!("the tags of {word:?} are not closed (']' missing)"))
                }
            }
        }
    }

    /// A single- or double-quoted string with JavaScript escapes.
    fn string(&mut self) -> Result<String> {
        let quote = self.bump().expect("called at a quote");
        let start = self.line;
        let mut s = String::new();
        loop {
            match self.bump() {
                Some(c) if c == quote => return Ok(s),
                Some('\\') => match self.bump() {
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some('r') => s.push('\r'),
                    Some('b') => s.push('\u{8}'),
                    Some('f') => s.push('\u{c}'),
                    Some('v') => s.push('\u{b}'),
                    Some('0') => s.push('\0'),
                    Some('u') => {
                        let hex: String = (0..4).filter_map(|_| self.bump()).collect();
                        match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                            Some(c) if hex.len() == 4 => s.push(c),
                            _ => return self.err(format!("bad escape \\u{hex}")),
                        }
                    }
                    Some('\n') => {}
                    Some(c) => s.push(c),
                    None => break,
                },
                Some('\n') | None => break,
                Some(c) => s.push(c),
            }
        }
        self.line = start;
        self.err(format!("unterminated string starting {quote}{s}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Lexicon> {
        Lexicon::parse(Path::new("lexicon.js"), text)
    }

    #[test]
    fn parses_the_shipped_shape() {
        let text = "/*\n * Brill.\n */ \n\nmodule.exports = {\n    \"\\'\": [\n        \"\\\"\"\n    ],\n    \"hanging\": [\n        \"VBG\", \n        \"JJ\", \n        \"NN\"\n    ], \n    \"Sun-3\\\\\": [\"NNP\"],\n    \"a\\/b\": ['NN',],\n    \"\": [], \n    bare: [\"NN\"],\n};\n";
        let lex = parse(text).unwrap();
        assert_eq!(lex.len(), 5);
        assert_eq!(lex.lookup("hanging").unwrap(), ["VBG", "JJ", "NN"]);
        assert_eq!(lex.lookup("Hanging").unwrap()[0], "VBG");
        assert_eq!(lex.lookup("'").unwrap(), ["\""]);
        assert_eq!(lex.lookup("Sun-3\\").unwrap(), ["NNP"]);
        assert_eq!(lex.lookup("a/b").unwrap(), ["NN"]);
        assert!(lex.lookup("").is_none());
        assert_eq!(lex.words_tagged("NN"), ["a/b", "bare"]);
        assert_eq!(lex.replacements("NN"), ["bare"]);
        assert!(lex.words_tagged("XX").is_empty());
    }

    #[test]
    fn plain_words() {
        assert!(is_plain_word("well-made", "JJ") && is_plain_word("Paris", "NNP"));
        assert!(!is_plain_word("Paris", "NN") && !is_plain_word("U.S.", "NNP"));
        assert!(
            !is_plain_word("1990s", "NNS") && !is_plain_word("-", ":") && !is_plain_word(",", ",")
        );
    }

    #[test]
    fn malformed_entries_name_the_line() {
        let cases = [
            (
                "module.exports = {\n  \"a\": [\"NN\"],\n  \"b\": \"NN\",\n};",
                3,
                "'['",
            ),
            (
                "module.exports = {\n  \"a\": [\"NN\"\n  \"b\": [\"NN\"]\n};",
                3,
                "',' or ']'",
            ),
            ("module.exports = {\n\n  \"a\" [\"NN\"]\n};", 3, "':'"),
            (
                "module.exports = {\n  \"a\": [\"NN],\n};",
                2,
                "unterminated",
            ),
            ("module.exports = {\n  \"a\": [\"NN\"]\n", 3, "not closed"),
            ("exports = {};", 1, "module.exports"),
            ("{ \"a\": [\"NN\"] } x", 1, "after the lexicon"),
        ];
        for (text, line, needle) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("lexicon.js:{line}: ")),
                "{text:?}: {e}"
            );
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn missing_file_says_how_to_fetch() {
        let e = Lexicon::load(Path::new("/nonexistent/pos/lexicon.js")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("scripts/fetch-assets.sh") && msg.contains("/nonexistent/pos/lexicon.js")
        );
    }
}
