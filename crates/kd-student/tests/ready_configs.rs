//! The ready student configurations in `pipelines/students/`: TinyBERT-4 (the paper's 4 layers,
//! width 312, FFN 1200, 12 heads) and a MiniLM-proportional student (3 layers, width 192,
//! 12 heads) build as fresh, seeded students whose head count matches their teachers'
//! (BERT-base and all-MiniLM-L6-v2 both have 12), as TinyBERT's attention loss needs.

use candle_core::Device;
use kd_student::init::student_from_config_file;
use std::path::PathBuf;

fn config(name: &str) -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../pipelines/students")
    .join(name)
}

fn parameters(m: &kd_bert::LoadedModel) -> usize {
    m.varmap.all_vars().iter().map(|v| v.elem_count()).sum()
}

#[test]
fn ready_students_build_with_twelve_heads_and_their_sizes() {
    let t4 = student_from_config_file(&config("tinybert-4.json"), 0, &Device::Cpu).unwrap();
    let c = &t4.model.config;
    assert_eq!(
        (c.num_hidden_layers, c.hidden_size, c.intermediate_size),
        (4, 312, 1200)
    );
    assert_eq!(c.num_attention_heads, 12);
    // The paper reports 14.5M parameters for TinyBERT-4. As a masked-LM model (tied decoder,
    // no pooler): embeddings 30522*312 + 512*312 + 2*312 + 624 = 9,683,856; four layers of
    // 4*(312*312 + 312) + 624 + (312*1200 + 1200) + (1200*312 + 312) + 624 = 1,142,184; the
    // head's transform 312*312 + 312 + 624 and decoder bias 30522: 14,381,394 in all.
    let n = parameters(&t4);
    assert_eq!(n, 9_683_856 + 4 * 1_142_184 + 97_656 + 624 + 30_522, "{n}");
    let m3 = student_from_config_file(&config("minilm-3x192.json"), 0, &Device::Cpu).unwrap();
    let c = &m3.model.config;
    assert_eq!(
        (c.num_hidden_layers, c.hidden_size, c.num_attention_heads),
        (3, 192, 12)
    );
    assert_eq!(c.hidden_size % c.num_attention_heads, 0);
    // Reproducible from the seed, different across seeds.
    let again = student_from_config_file(&config("minilm-3x192.json"), 0, &Device::Cpu).unwrap();
    let other = student_from_config_file(&config("minilm-3x192.json"), 1, &Device::Cpu).unwrap();
    let w = |m: &kd_bert::LoadedModel| -> Vec<f32> {
        let vars = m.varmap.data().lock().unwrap();
        vars["bert.encoder.layer.0.attention.self.query.weight"]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    assert_eq!(w(&m3), w(&again));
    assert_ne!(w(&m3), w(&other));
}
