//! Brill's lexicon as shipped (npm pos@0.4.2), checked against what the package's own
//! JavaScript reports (`node -e` with `require('./lexicon.js')` and `POSTagger.tag`).

mod common;

use kd_augment::lexicon::Lexicon;
use kd_augment::pos::tag_sentence;

#[test]
fn real_lexicon_parses_with_the_javascript_counts_and_tags() {
    let lex = Lexicon::load(&common::lexicon()).unwrap();
    // Object.keys(lexicon).length = 92662, one of them "" with no tags.
    assert_eq!(lex.len(), 92661);
    assert_eq!(lex.lookup("hanging").unwrap(), ["VBG", "JJ", "NN"]);
    assert_eq!(lex.lookup("good").unwrap(), ["JJ", "NN", "RB"]);
    assert_eq!(
        lex.lookup("the").unwrap()[..4],
        ["DT", "VBD", "VBP", "NN|DT"]
    );
    assert_eq!(lex.lookup("Rock").unwrap(), ["NNP"]);
    let words: Vec<&str> = "The movie would drive the 5.2 gallons quickly into www.kd.org and \
                            unfoldings , zorped plateal . It feels hanging"
        .split(' ')
        .collect();
    // POSTagger.tag(words) of the package.
    let expected = "DT NN MD VB DT CD NNS RB IN URL CC NNS , VBN JJ . PRP VBZ VBG";
    assert_eq!(tag_sentence(&lex, &words).join(" "), expected);
    assert!(lex.replacements("JJ").len() > 10_000);
    assert!(lex.replacements("NN").iter().all(|w| !w.contains('.')));
}
