//! Batching: padding, masks, token types, MLM positions, length grouping.

mod common;

use common::{encoder, id};
use kd_data::{
    collate, encode_text_pair, length_grouped_batches, BatchItem, EncodedExample, GroupConfig,
    Label, MaskConfig, Masker, PackedSequence,
};

#[test]
fn collate_pads_and_flattens_mlm_positions() {
    let enc = encoder();
    let pad = enc.specials().pad;
    let m = Masker::new(
        MaskConfig::default(),
        enc.specials(),
        enc.vocab_size(),
        None,
    )
    .unwrap();
    let a: Vec<u32> = [vec![id("[CLS]")], vec![id("cat"); 10], vec![id("[SEP]")]].concat();
    let b: Vec<u32> = [vec![id("[CLS]")], vec![id("dog"); 20], vec![id("[SEP]")]].concat();
    let ma = m.mask(&a, 0, 0, 1);
    let mb = m.mask(&b, 0, 0, 2);
    let batch = collate(&[BatchItem::masked(1, &ma), BatchItem::masked(2, &mb)], pad).unwrap();
    assert_eq!((batch.batch_size, batch.seq_len), (2, 22));
    assert_eq!(batch.ids, [1, 2]);
    assert_eq!(&batch.input_ids[..12], &ma.input_ids[..]);
    assert!(batch.input_ids[12..22].iter().all(|&t| t == pad));
    assert_eq!(&batch.input_ids[22..], &mb.input_ids[..]);
    assert_eq!(batch.attention_mask[..22].iter().sum::<u32>(), 12);
    assert_eq!(batch.attention_mask[22..].iter().sum::<u32>(), 22);
    assert_eq!(batch.num_tokens(), 34);
    assert!(batch.token_type_ids.iter().all(|&t| t == 0));
    let expect: Vec<u32> = ma
        .positions
        .iter()
        .copied()
        .chain(mb.positions.iter().map(|p| p + 22))
        .collect();
    assert_eq!(batch.mlm_positions, expect);
    assert_eq!(
        batch.mlm_labels,
        [ma.labels.clone(), mb.labels.clone()].concat()
    );
    let dense = batch.mlm_labels_dense(-100);
    assert_eq!(dense.iter().filter(|&&v| v != -100).count(), 2 + 3);
    assert!(batch.labels.is_empty());
}

#[test]
fn collate_task_examples_with_token_types() {
    let enc = encoder();
    let (i1, t1) = encode_text_pair(&enc, "the cat", Some("sat"), 32).unwrap();
    let (i2, t2) = encode_text_pair(&enc, "red", None, 32).unwrap();
    let e1 = EncodedExample {
        input_ids: i1,
        token_type_ids: t1,
        label: Label::Class(1),
    };
    let e2 = EncodedExample {
        input_ids: i2,
        token_type_ids: t2,
        label: Label::Class(0),
    };
    let batch = collate(&[BatchItem::task(0, &e1), BatchItem::task(1, &e2)], 0).unwrap();
    assert_eq!(batch.seq_len, 6);
    assert_eq!(&batch.token_type_ids[..6], &[0, 0, 0, 0, 1, 1]);
    assert_eq!(&batch.token_type_ids[6..], &[0, 0, 0, 0, 0, 0]);
    assert_eq!(&batch.attention_mask[6..], &[1, 1, 1, 0, 0, 0]);
    assert_eq!(batch.labels, [Label::Class(1), Label::Class(0)]);
}

#[test]
fn collate_errors() {
    assert!(collate(&[], 0).is_err());
    let s = PackedSequence {
        id: 0,
        doc: 0,
        input_ids: vec![1, 2, 3],
    };
    let mut bad = BatchItem::packed(&s);
    bad.mlm_positions = &[5];
    bad.mlm_labels = &[2];
    assert!(collate(&[bad], 0).is_err(), "position outside");
    let mut bad = BatchItem::packed(&s);
    bad.token_type_ids = Some(&[0]);
    assert!(collate(&[bad], 0).is_err(), "token types length");
    let mut labelled = BatchItem::packed(&s);
    labelled.label = Some(Label::Class(0));
    assert!(
        collate(&[labelled, BatchItem::packed(&s)], 0).is_err(),
        "mixed labels"
    );
}

fn lengths(n: usize) -> Vec<usize> {
    (0..n).map(|i| 12 + (i * 7919) % 117).collect()
}

#[test]
fn length_grouped_batches_cover_each_sequence_once() {
    let lens = lengths(1003);
    let cfg = GroupConfig {
        batch_size: 16,
        window_batches: 10,
    };
    let batches = length_grouped_batches(&lens, &cfg, 7, 0).unwrap();
    let mut seen = vec![0u32; lens.len()];
    for b in &batches {
        assert!(!b.is_empty() && b.len() <= 16);
        for &i in b {
            seen[i] += 1;
        }
    }
    assert!(seen.iter().all(|&c| c == 1));
    assert_eq!(batches.len(), 1003usize.div_ceil(16));
    assert_eq!(batches.iter().filter(|b| b.len() < 16).count(), 1);
    // Grouping reduces padding compared with a random order.
    let padded = |bs: &[Vec<usize>]| -> usize {
        bs.iter()
            .map(|b| b.len() * b.iter().map(|&i| lens[i]).max().unwrap())
            .sum()
    };
    let random: Vec<Vec<usize>> = (0..lens.len())
        .collect::<Vec<_>>()
        .chunks(16)
        .map(<[usize]>::to_vec)
        .collect();
    assert!(
        padded(&batches) * 10 < padded(&random) * 8,
        "grouping pads less"
    );
}

#[test]
fn length_grouping_is_seeded() {
    let lens = lengths(500);
    let cfg = GroupConfig {
        batch_size: 8,
        window_batches: 100,
    };
    let a = length_grouped_batches(&lens, &cfg, 1, 0).unwrap();
    assert_eq!(a, length_grouped_batches(&lens, &cfg, 1, 0).unwrap());
    assert_ne!(a, length_grouped_batches(&lens, &cfg, 1, 1).unwrap());
    assert_ne!(a, length_grouped_batches(&lens, &cfg, 2, 0).unwrap());
    // Batch order is shuffled: batch lengths are not monotone.
    let maxes: Vec<usize> = a
        .iter()
        .map(|b| b.iter().map(|&i| lens[i]).max().unwrap())
        .collect();
    assert!(maxes.windows(2).any(|w| w[0] > w[1]) && maxes.windows(2).any(|w| w[0] < w[1]));
    assert!(length_grouped_batches(&[], &cfg, 0, 0).unwrap().is_empty());
    let zero = GroupConfig {
        batch_size: 0,
        window_batches: 1,
    };
    assert!(length_grouped_batches(&lens, &zero, 0, 0).is_err());
}
