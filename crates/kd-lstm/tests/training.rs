//! Training the BiLSTM student through the kd-student `Student` interface with Tang et al.'s
//! loss, `a * CE(labels) + (1 - a) * MSE(student logits, teacher logits)`: every parameter
//! gets a gradient, a few AdamW steps lower the loss, and losses it cannot serve are refused.

mod common;

use candle_core::{Device, Tensor};
use common::{batch, small_config, values};
use kd_bert::ForwardCtx;
use kd_distill::{logit_mse, mlm_cross_entropy};
use kd_lstm::{init, BiLstmStudent};
use kd_student::student::{Student, Wants};
use kd_train::{AdamW, AdamWConfig};
use rand::SeedableRng;

fn rows() -> Vec<(Vec<u32>, Vec<u32>, u32)> {
    vec![
        (
            vec![2, 17, 45, 9, 3, 61, 8, 3],
            vec![0, 0, 0, 0, 0, 1, 1, 1],
            0,
        ),
        (vec![2, 5, 3, 88, 71, 12, 3], vec![0, 0, 0, 1, 1, 1, 1], 1),
        (
            vec![2, 30, 31, 32, 33, 3, 7, 3],
            vec![0, 0, 0, 0, 0, 0, 1, 1],
            2,
        ),
        (vec![2, 40, 3, 41, 3], vec![0, 0, 0, 1, 1], 1),
    ]
}

/// Tang et al.'s loss with `a = 0.5` on the class logits of `student`.
fn loss(student: &BiLstmStudent, b: &kd_data::Batch, rng: &mut rand_chacha::ChaCha8Rng) -> Tensor {
    let wants = Wants {
        class_logits: true,
        ..Wants::default()
    };
    let out = student
        .forward(b, &wants, &mut ForwardCtx::train(rng))
        .unwrap();
    let logits = out.class_logits.unwrap();
    let dev = Device::Cpu;
    let labels: Vec<u32> = rows().iter().map(|r| r.2).collect();
    let labels = Tensor::from_vec(labels, 4, &dev).unwrap();
    let teacher = Tensor::from_vec(
        vec![
            2.0f32, -1.0, 0.5, -1.0, 1.5, 0.0, 0.0, -0.5, 2.5, -1.0, 1.0, 0.0,
        ],
        (4, 3),
        &dev,
    )
    .unwrap();
    let ce = mlm_cross_entropy(&logits, &labels).unwrap();
    let mse = logit_mse(&logits, &teacher).unwrap();
    ((ce * 0.5).unwrap() + (mse * 0.5).unwrap()).unwrap()
}

#[test]
fn every_parameter_learns_and_the_loss_falls() {
    for siamese in [false, true] {
        let cfg = kd_lstm::BiLstmConfig {
            dropout: 0.1,
            ..small_config(siamese)
        };
        let built = init::fresh(&cfg, 9, &Device::Cpu).unwrap();
        let student = BiLstmStudent::new(built, None, &Device::Cpu);
        assert_eq!(student.num_heads(), 0);
        let b = batch(&rows());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut opt = AdamW::new(
            student.varmap(),
            AdamWConfig {
                lr: 1e-2,
                ..AdamWConfig::default()
            },
        )
        .unwrap();
        let mut first = None;
        let mut last = 0.0;
        for step in 0..60 {
            let l = loss(&student, &b, &mut rng);
            let grads = l.backward().unwrap();
            if step == 0 {
                let vars = student.varmap().data().lock().unwrap();
                assert_eq!(vars.len(), 13);
                for (name, v) in vars.iter() {
                    let g = grads
                        .get(v.as_tensor())
                        .unwrap_or_else(|| panic!("{name}: no gradient"));
                    assert!(
                        values(g).iter().any(|&x| x != 0.0),
                        "{name}: zero gradient (siamese {siamese})"
                    );
                }
            }
            opt.step(&grads).unwrap();
            last = l.to_scalar::<f32>().unwrap();
            first.get_or_insert(last);
        }
        let first = first.unwrap();
        assert!(
            last < 0.5 * first,
            "siamese {siamese}: loss {first} -> {last} after 60 steps"
        );
    }
}

#[test]
fn losses_that_need_more_than_class_logits_are_refused() {
    let built = init::fresh(&small_config(false), 9, &Device::Cpu).unwrap();
    let student = BiLstmStudent::new(built, None, &Device::Cpu);
    let b = batch(&rows());
    for (wants, needle) in [
        (
            Wants {
                mlm_logits: true,
                ..Wants::default()
            },
            "vocabulary logits",
        ),
        (
            Wants {
                hidden: [1].into(),
                ..Wants::default()
            },
            "hidden states of layers {1}",
        ),
        (
            Wants {
                attention: [2].into(),
                ..Wants::default()
            },
            "attention scores",
        ),
    ] {
        let e = match student.forward(&b, &wants, &mut ForwardCtx::eval()) {
            Ok(_) => panic!("{needle}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("class logits only") && e.contains(needle), "{e}");
    }
}

#[test]
fn dropout_is_on_in_training_only() {
    let cfg = kd_lstm::BiLstmConfig {
        dropout: 0.3,
        ..small_config(false)
    };
    let built = init::fresh(&cfg, 2, &Device::Cpu).unwrap();
    let m = &built.model;
    let b = batch(&rows());
    let dev = Device::Cpu;
    let eval = |m: &kd_lstm::BiLstmClassifier| {
        values(&m.forward(&b, &mut ForwardCtx::eval(), &dev).unwrap())
    };
    assert_eq!(eval(m), eval(m));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let train = values(
        &m.forward(&b, &mut ForwardCtx::train(&mut rng), &dev)
            .unwrap(),
    );
    assert_ne!(train, eval(m));
}
