//! The movie-review set: parsing, split rule, counts, encoding. The real file is found under
//! `KD_ASSETS` (default `assets/`) or at `KD_MOVIE_REVIEWS`; missing, it fails the test unless
//! `KD_SKIP_ASSETS=1`.

mod common;

use std::path::{Path, PathBuf};

use kd_data::movie_reviews::{parse_movie_reviews, split_of, FILE_NAME};
use kd_data::{load_movie_reviews, DataError, Label, Split};

const SAMPLE: &str =
    "1\t2.26666666667\tThe Rock is destined to be the 21st Century's new ''Conan''.\r\n\
2\t3.53333333333\tThe gorgeously elaborate continuation.\r\n\
3\t-0.6\tEffective but too tepid biopic\r\n\
10\t0.0\tA perfectly neutral sentence.\r\n\
11\t-1.5\tThe clichés disappear, uniquely Almodóvar – not.\r\n\
20\t1.0\tIt\thas a tab.\r\n\
21\t0\tZero again\r\n\
30\t-3.25\tDreadful.";

fn sample() -> kd_data::MovieReviews {
    parse_movie_reviews(Path::new("sample.txt"), SAMPLE.as_bytes()).unwrap()
}

#[test]
fn split_rule_by_id() {
    assert_eq!(split_of(10), Split::Test);
    assert_eq!(split_of(0), Split::Test);
    assert_eq!(split_of(21), Split::Dev);
    assert_eq!(split_of(1), Split::Dev);
    for id in [2, 3, 9, 12, 19, 10_605] {
        assert_eq!(split_of(id), Split::Train, "{id}");
    }
}

#[test]
fn sample_counts_and_split() {
    let set = sample();
    assert_eq!((set.positive, set.negative, set.zeros), (3, 3, 2));
    let ids = |s: Split| set.split(s).iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(Split::Train), [2, 3]);
    assert_eq!(ids(Split::Dev), [1, 11]);
    assert_eq!(ids(Split::Test), [20, 30]);
    let r11 = &set.dev[1];
    assert_eq!(r11.label, 0);
    assert_eq!(r11.rating, -1.5);
    assert_eq!(r11.line, 5);
    // UTF-8 text decoded as such, CRLF removed.
    assert_eq!(r11.text, "The clichés disappear, uniquely Almodóvar – not.");
    // Tabs inside the text are kept.
    assert_eq!(set.test[0].text, "It\thas a tab.");
    assert_eq!(set.test[1].text, "Dreadful.");
    let ds = set.task_dataset(Split::Dev, false);
    assert_eq!(ds.label_names, ["negative", "positive"]);
    assert_eq!(ds.examples[0].label, Label::Class(1));
    let reg = set.task_dataset(Split::Test, true);
    assert_eq!(reg.examples[1].label, Label::Value(-3.25));
}

#[test]
fn malformed_and_non_utf8_lines_name_the_line() {
    let err =
        parse_movie_reviews(Path::new("m.txt"), b"1\t1.0\tok\n2\tnot-a-number\tx\n").unwrap_err();
    assert!(
        matches!(err, DataError::Malformed { line: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("m.txt:2"));
    let err = parse_movie_reviews(Path::new("m.txt"), b"1\t1.0\tok\n2\t1.0\n").unwrap_err();
    assert!(
        matches!(err, DataError::Malformed { line: 2, .. }),
        "{err:?}"
    );
    let err = parse_movie_reviews(Path::new("m.txt"), b"1\t1.0\tok\n1\t2.0\tagain\n").unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
    // A Latin-1 byte (0xE9, 'é') is not silently accepted.
    let err =
        parse_movie_reviews(Path::new("m.txt"), b"1\t1.0\tok\n2\t1.0\tclich\xe9s\n").unwrap_err();
    assert!(matches!(err, DataError::NonUtf8 { line: 2, .. }), "{err:?}");
}

/// `KD_MOVIE_REVIEWS` when set (it must exist), else the asset's file.
fn find_asset() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KD_MOVIE_REVIEWS") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "KD_MOVIE_REVIEWS={} is not a file",
            p.display()
        );
        return Some(p);
    }
    common::asset(&format!("movie-reviews/{FILE_NAME}"))
}

#[test]
fn real_asset_counts() {
    let Some(path) = find_asset() else {
        return;
    };
    let set = load_movie_reviews(&path).unwrap();
    assert_eq!((set.positive, set.negative, set.zeros), (5242, 5326, 37));
    assert_eq!(set.train.len() + set.dev.len() + set.test.len(), 10_568);
    assert!(set.dev.iter().all(|r| r.id % 10 == 1));
    assert!(set.test.iter().all(|r| r.id % 10 == 0));
    assert!(set.train.iter().any(|r| r.text.contains("Almodóvar")));
    println!(
        "movie reviews: train {} dev {} test {}",
        set.train.len(),
        set.dev.len(),
        set.test.len()
    );
}
