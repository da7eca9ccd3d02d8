use candle_core::{Device, Tensor};
use std::time::Instant;
fn t(name: &str, f: impl Fn()) {
    f();
    let s = Instant::now();
    for _ in 0..10 {
        f();
    }
    println!("{name}: {:.3} ms", s.elapsed().as_secs_f64() * 100.0);
}
fn main() {
    let d = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (1024, 384), &d).unwrap();
    let w = Tensor::randn(0f32, 1., (384, 384), &d).unwrap();
    t("linear 1024x384x384", || {
        x.matmul(&w.t().unwrap()).unwrap();
    });
    let q = Tensor::randn(0f32, 1., (8, 12, 128, 32), &d).unwrap();
    let k = Tensor::randn(0f32, 1., (8, 12, 128, 32), &d).unwrap();
    t("qk^T", || {
        q.matmul(&k.t().unwrap()).unwrap();
    });
    let kt = k.t().unwrap().contiguous().unwrap();
    t("qk^T contiguous kt", || {
        q.matmul(&kt).unwrap();
    });
    let s = Tensor::randn(0f32, 1., (8, 12, 128, 128), &d).unwrap();
    t("softmax", || {
        kd_bert::ops::softmax_last_dim(&s).unwrap();
    });
    t("candle softmax_last_dim", || {
        candle_nn::ops::softmax_last_dim(&s).unwrap();
    });
    t("pv", || {
        s.matmul(&q).unwrap();
    });
    let m = Tensor::zeros((8, 1, 1, 128), candle_core::DType::F32, &d).unwrap();
    t("scale+mask", || {
        (s.clone() * 0.1).unwrap().broadcast_add(&m).unwrap();
    });
    let lw = Tensor::ones(384, candle_core::DType::F32, &d).unwrap();
    t("layernorm", || {
        kd_bert::ops::layer_norm(&x, &lw, &lw, 1e-12).unwrap();
    });
    let g = Tensor::randn(0f32, 1., (1024, 1536), &d).unwrap();
    t("gelu", || {
        kd_bert::ops::gelu_erf(&g).unwrap();
    });
    let q4 = Tensor::randn(0f32, 1., (8, 128, 12, 32), &d).unwrap();
    t("transpose contiguous", || {
        q4.transpose(1, 2).unwrap().contiguous().unwrap();
    });
}
