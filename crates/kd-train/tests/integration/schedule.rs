use kd_train::{warmup_from_fraction, Schedule};

#[test]
fn linear_warmup_decay_values() {
    let s = Schedule::LinearWarmupDecay {
        warmup_steps: 10,
        total_steps: 110,
    };
    let base = 2e-4;
    let cases = [
        (0, 0.0),
        (1, 0.1),
        (5, 0.5),
        (10, 1.0),
        (35, 0.75),
        (60, 0.5),
        (109, 0.01),
        (110, 0.0),
        (500, 0.0),
    ];
    for (step, f) in cases {
        assert!((s.factor(step) - f).abs() < 1e-15, "step {step}");
        assert!((s.lr(base, step) - base * f).abs() < 1e-18, "step {step}");
    }
    s.validate().unwrap();
}

#[test]
fn constant_with_warmup_values() {
    let s = Schedule::Constant { warmup_steps: 4 };
    for (step, f) in [
        (0, 0.0),
        (1, 0.25),
        (2, 0.5),
        (3, 0.75),
        (4, 1.0),
        (10_000, 1.0),
    ] {
        assert_eq!(s.factor(step), f, "step {step}");
    }
    let none = Schedule::Constant { warmup_steps: 0 };
    assert_eq!(none.factor(0), 1.0);
    let nowarm = Schedule::LinearWarmupDecay {
        warmup_steps: 0,
        total_steps: 4,
    };
    assert_eq!(nowarm.factor(0), 1.0);
    assert_eq!(nowarm.factor(1), 0.75);
}

#[test]
fn degenerate_schedules_do_not_panic() {
    let s = Schedule::LinearWarmupDecay {
        warmup_steps: 10,
        total_steps: 5,
    };
    assert!(s.validate().is_err());
    assert_eq!(s.factor(20), 0.0);
    let z = Schedule::LinearWarmupDecay {
        warmup_steps: 0,
        total_steps: 0,
    };
    assert_eq!(z.factor(0), 0.0);
    assert_eq!(z.factor(u64::MAX), 0.0);
}

#[test]
fn warmup_fraction() {
    assert_eq!(warmup_from_fraction(1000, 0.06).unwrap(), 60);
    assert_eq!(warmup_from_fraction(10, 0.05).unwrap(), 1);
    assert_eq!(warmup_from_fraction(1000, 0.0).unwrap(), 0);
    assert!(warmup_from_fraction(10, 1.5).is_err());
    assert!(warmup_from_fraction(10, f64::NAN).is_err());
    let s = Schedule::linear_with_warmup_fraction(1000, 0.1).unwrap();
    assert_eq!(
        s,
        Schedule::LinearWarmupDecay {
            warmup_steps: 100,
            total_steps: 1000
        }
    );
}

#[test]
fn serde_kind_tag() {
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Cfg {
        schedule: Schedule,
    }
    let text =
        "[schedule]\nkind = \"linear_warmup_decay\"\nwarmup_steps = 100\ntotal_steps = 1000\n";
    let cfg: Cfg = toml::from_str(text).unwrap();
    assert_eq!(
        cfg.schedule,
        Schedule::LinearWarmupDecay {
            warmup_steps: 100,
            total_steps: 1000
        }
    );
    let back = toml::to_string(&cfg).unwrap();
    assert_eq!(toml::from_str::<Cfg>(&back).unwrap().schedule, cfg.schedule);

    let c: Schedule = serde_json::from_str(r#"{"kind":"constant","warmup_steps":3}"#).unwrap();
    assert_eq!(c, Schedule::Constant { warmup_steps: 3 });
    assert!(serde_json::from_str::<Schedule>(r#"{"kind":"cosine","warmup_steps":3}"#).is_err());
    assert!(serde_json::from_str::<Schedule>(r#"{"kind":"constant","warmup":3}"#).is_err());
}
