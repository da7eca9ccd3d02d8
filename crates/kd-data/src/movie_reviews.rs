//! The movie-review sentiment set (Rotten Tomatoes snippets with mean human
//! ratings, `movieReviewSnippets_GroundTruth.txt`).
//!
//! Format: one review per line, `id<TAB>rating<TAB>text`, the rating a mean in
//! [-4, 4]. The file as shipped is UTF-8 (accented names such as `Almodóvar`
//! and a few `–`/`’` are multi-byte UTF-8) with CRLF line ends and no final
//! newline; it is decoded strictly as UTF-8 and `\r\n` is accepted, so a
//! corrupted copy is an error naming its line rather than silent mojibake.
//!
//! Binary task: label 1 when rating > 0, 0 when rating < 0; ratings of exactly
//! 0 are dropped. Fixed split by id: `id % 10 == 0` test, `== 1` dev, else
//! train. The full file has 5,242 positive, 5,326 negative and 37 zero
//! ratings (10,605 lines).

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::task::{Label, TaskDataset, TaskExample};
use crate::text::split_lines;

/// File name of the set inside the distribution.
pub const FILE_NAME: &str = "movieReviewSnippets_GroundTruth.txt";

/// A fixed split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// `id % 10` in 2..=9.
    Train,
    /// `id % 10 == 1`.
    Dev,
    /// `id % 10 == 0`.
    Test,
}

/// The split of review `id`.
pub fn split_of(id: u32) -> Split {
    match id % 10 {
        0 => Split::Test,
        1 => Split::Dev,
        _ => Split::Train,
    }
}

/// One review with a non-zero rating.
#[derive(Debug, Clone, PartialEq)]
pub struct MovieReview {
    /// Id from the file.
    pub id: u32,
    /// Mean human rating in [-4, 4], never 0.
    pub rating: f32,
    /// 1 for a positive rating, 0 for a negative one.
    pub label: u32,
    /// The snippet.
    pub text: String,
    /// 1-based line in the file.
    pub line: usize,
}

/// The parsed set, split.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MovieReviews {
    /// The file read.
    pub path: PathBuf,
    /// Training reviews, in file order.
    pub train: Vec<MovieReview>,
    /// Dev reviews, in file order.
    pub dev: Vec<MovieReview>,
    /// Test reviews, in file order.
    pub test: Vec<MovieReview>,
    /// Reviews with rating > 0.
    pub positive: usize,
    /// Reviews with rating < 0.
    pub negative: usize,
    /// Reviews dropped for a rating of exactly 0.
    pub zeros: usize,
}

impl MovieReviews {
    /// The reviews of `split`.
    pub fn split(&self, split: Split) -> &[MovieReview] {
        match split {
            Split::Train => &self.train,
            Split::Dev => &self.dev,
            Split::Test => &self.test,
        }
    }

    /// `split` as a task dataset: binary labels (`negative` = 0, `positive` = 1)
    /// or, with `regression`, the ratings as targets.
    pub fn task_dataset(&self, split: Split, regression: bool) -> TaskDataset {
        let examples = self
            .split(split)
            .iter()
            .map(|r| TaskExample {
                line: r.line,
                text: r.text.clone(),
                text_pair: None,
                label: if regression {
                    Label::Value(r.rating)
                } else {
                    Label::Class(r.label)
                },
            })
            .collect();
        TaskDataset {
            path: self.path.clone(),
            examples,
            label_names: if regression {
                Vec::new()
            } else {
                vec!["negative".into(), "positive".into()]
            },
            num_labels: if regression { 1 } else { 2 },
        }
    }
}

/// Reads and parses the file at `path`.
pub fn load_movie_reviews(path: &Path) -> Result<MovieReviews> {
    let bytes = crate::text::read_regular_file(path)?;
    parse_movie_reviews(path, &bytes)
}

/// Parses the content `bytes` of the file `path` (used in errors).
///
/// Errors name the line: invalid UTF-8, fewer than three tab-separated fields,
/// a non-integer id, a non-finite rating, a repeated id. Blank lines are
/// skipped; tabs inside the text are kept.
pub fn parse_movie_reviews(path: &Path, bytes: &[u8]) -> Result<MovieReviews> {
    let mut set = MovieReviews {
        path: path.to_path_buf(),
        ..MovieReviews::default()
    };
    let mut seen = std::collections::HashSet::new();
    for line in split_lines(path, bytes)? {
        if line.text.trim().is_empty() {
            continue;
        }
        let malformed = |message: String| DataError::Malformed {
            path: path.to_path_buf(),
            line: line.number,
            message,
        };
        let mut fields = line.text.splitn(3, '\t');
        let (Some(id), Some(rating), Some(text)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed("expected `id<TAB>rating<TAB>text`".into()));
        };
        let id: u32 = id
            .trim()
            .parse()
            .map_err(|_| malformed(format!("id {id:?} is not a non-negative integer")))?;
        let rating: f32 = rating
            .trim()
            .parse()
            .ok()
            .filter(|r: &f32| r.is_finite())
            .ok_or_else(|| malformed(format!("rating {rating:?} is not a number")))?;
        if !seen.insert(id) {
            return Err(malformed(format!("id {id} appears twice")));
        }
        if rating == 0.0 {
            set.zeros += 1;
            continue;
        }
        let label = u32::from(rating > 0.0);
        if label == 1 {
            set.positive += 1;
        } else {
            set.negative += 1;
        }
        let review = MovieReview {
            id,
            rating,
            label,
            text: text.trim().to_string(),
            line: line.number,
        };
        match split_of(id) {
            Split::Train => set.train.push(review),
            Split::Dev => set.dev.push(review),
            Split::Test => set.test.push(review),
        }
    }
    Ok(set)
}
