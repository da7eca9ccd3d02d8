//! Text corpora: plain-text files (one paragraph per line, one document per
//! file) or JSONL (one document per record), read strictly and in a
//! deterministic order.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::text::read_lines;

/// How the corpus files are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorpusFormat {
    /// Plain text: one paragraph per line, blank lines skipped, one document per
    /// file. Folders contribute their `*.txt` files.
    Text,
    /// Parquet: one document per row, its text in the string column `text_column` (split on
    /// newlines into paragraphs). Folders contribute their `*.parquet` files.
    Parquet {
        /// Name of the string column that holds the text.
        text_column: String,
    },
    /// JSON Lines: one object per line, one document per record; the string in
    /// `text_field` is split on newlines into paragraphs (blank ones skipped).
    /// Blank lines between records are skipped. Folders contribute their
    /// `*.jsonl` files.
    Jsonl {
        /// Name of the field that holds the text.
        text_field: String,
    },
}

impl CorpusFormat {
    /// File extension picked up from folders (`txt` or `jsonl`).
    pub fn extension(&self) -> &'static str {
        match self {
            CorpusFormat::Text => "txt",
            CorpusFormat::Jsonl { .. } => "jsonl",
            CorpusFormat::Parquet { .. } => "parquet",
        }
    }
}

/// One non-blank paragraph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paragraph {
    /// 1-based line number in the document's file.
    pub line: usize,
    /// The text, with surrounding whitespace trimmed.
    pub text: String,
}

/// One document: a text file, or a JSONL record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Stable id: the document's position in the corpus order (files in input
    /// order, folder contents sorted by name, JSONL records in line order).
    /// Documents without paragraphs keep their id.
    pub id: u32,
    /// The file it comes from.
    pub path: PathBuf,
    /// 1-based line of the record (JSONL), or 1 (plain text).
    pub line: usize,
    /// Its non-blank paragraphs, in order.
    pub paragraphs: Vec<Paragraph>,
}

/// A loaded corpus.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    /// The documents, in order; `documents[i].id == i`.
    pub documents: Vec<Document>,
}

/// Expands `inputs` into files: a file is taken as is, a folder contributes the
/// files directly inside it whose name ends in `.{extension}`, sorted by name
/// (not recursive). Missing paths are an [`DataError::Io`] error.
pub fn list_files(inputs: &[PathBuf], extension: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| DataError::io(input, e))?;
        if !meta.is_dir() {
            crate::text::require_regular_file(input)?;
            files.push(input.clone());
            continue;
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(input).map_err(|e| DataError::io(input, e))? {
            let entry = entry.map_err(|e| DataError::io(input, e))?;
            let path = entry.path();
            let is_file = entry
                .file_type()
                .map(|t| t.is_file() || (t.is_symlink() && path.is_file()))
                .map_err(|e| DataError::io(&path, e))?;
            if is_file && path.extension().is_some_and(|e| e == extension) {
                found.push(path);
            }
        }
        found.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        files.extend(found);
    }
    Ok(files)
}

impl Corpus {
    /// Reads every input (files and/or folders) in `format`.
    ///
    /// Errors: unreadable paths, non-UTF-8 bytes and bad JSON name the file
    /// and line; a corpus without a single non-blank paragraph is
    /// [`DataError::EmptyCorpus`] naming the inputs.
    pub fn load(inputs: &[PathBuf], format: &CorpusFormat) -> Result<Self> {
        let files = list_files(inputs, format.extension())?;
        let mut documents = Vec::new();
        for file in &files {
            match format {
                CorpusFormat::Text => {
                    let paragraphs = read_lines(file)?
                        .into_iter()
                        .filter(|l| !l.text.trim().is_empty())
                        .map(|l| Paragraph {
                            line: l.number,
                            text: l.text.trim().to_string(),
                        })
                        .collect();
                    documents.push(Document {
                        id: 0,
                        path: file.clone(),
                        line: 1,
                        paragraphs,
                    });
                }
                CorpusFormat::Jsonl { text_field } => {
                    read_jsonl(file, text_field, &mut documents)?;
                }
                CorpusFormat::Parquet { text_column } => {
                    crate::parquet_corpus::read_parquet(file, text_column, &mut documents)?;
                }
            }
        }
        let corpus = Corpus::from_parts(files, documents)?;
        if corpus.num_paragraphs() == 0 {
            return Err(DataError::EmptyCorpus {
                inputs: inputs.to_vec(),
            });
        }
        Ok(corpus)
    }

    /// Builds a corpus in memory: one document per inner vector, one paragraph
    /// per string (blank strings skipped). Paths read `<memory>`, lines count
    /// from 1 within each document.
    pub fn from_texts<S: AsRef<str>>(docs: &[Vec<S>]) -> Result<Self> {
        let documents = docs
            .iter()
            .map(|paras| Document {
                id: 0,
                path: PathBuf::from("<memory>"),
                line: 1,
                paragraphs: paras
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| !p.as_ref().trim().is_empty())
                    .map(|(i, p)| Paragraph {
                        line: i + 1,
                        text: p.as_ref().trim().to_string(),
                    })
                    .collect(),
            })
            .collect();
        Corpus::from_parts(Vec::new(), documents)
    }

    fn from_parts(files: Vec<PathBuf>, mut documents: Vec<Document>) -> Result<Self> {
        for (i, doc) in documents.iter_mut().enumerate() {
            doc.id = u32::try_from(i)
                .map_err(|_| DataError::Invalid("more than 2^32 documents".into()))?;
        }
        Ok(Corpus { files, documents })
    }

    /// Number of non-blank paragraphs over all documents.
    pub fn num_paragraphs(&self) -> usize {
        self.documents.iter().map(|d| d.paragraphs.len()).sum()
    }

    /// All paragraphs in corpus order, each with its document.
    pub fn paragraphs(&self) -> impl Iterator<Item = (&Document, &Paragraph)> {
        self.documents
            .iter()
            .flat_map(|d| d.paragraphs.iter().map(move |p| (d, p)))
    }
}

fn read_jsonl(path: &Path, field: &str, documents: &mut Vec<Document>) -> Result<()> {
    for line in read_lines(path)? {
        if line.text.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(&line.text).map_err(|e| DataError::Json {
                path: path.to_path_buf(),
                line: line.number,
                message: e.to_string(),
            })?;
        let text = json_text_field(path, line.number, &value, field)?;
        let paragraphs = text
            .lines()
            .filter(|p| !p.trim().is_empty())
            .map(|p| Paragraph {
                line: line.number,
                text: p.trim().to_string(),
            })
            .collect();
        documents.push(Document {
            id: 0,
            path: path.to_path_buf(),
            line: line.number,
            paragraphs,
        });
    }
    Ok(())
}

/// The string in `field` of the JSON object `value` (line `line` of `path`).
///
/// Errors name the file, the line, the field and the fields the record has:
/// [`DataError::Json`] when `value` is not an object, [`DataError::Field`] when
/// the field is missing or not a string.
pub fn json_text_field<'a>(
    path: &Path,
    line: usize,
    value: &'a serde_json::Value,
    field: &str,
) -> Result<&'a str> {
    let object = value.as_object().ok_or_else(|| DataError::Json {
        path: path.to_path_buf(),
        line,
        message: "expected a JSON object".into(),
    })?;
    let field_error = |problem: &str| DataError::Field {
        path: path.to_path_buf(),
        line,
        field: field.to_string(),
        problem: problem.to_string(),
        available: object.keys().cloned().collect(),
    };
    match object.get(field) {
        None => Err(field_error("missing")),
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(_) => Err(field_error("is not a string")),
    }
}
