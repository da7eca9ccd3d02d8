//! The fused BiLSTM against `torch.nn.LSTM` on packed sequences (fixtures/lstm_op.safetensors,
//! from make_lstm_fixtures.py), and the padding contract: padded steps change nothing.

use candle_core::{DType, Device, Tensor, Var};
use kd_lstm::BiLstm;
use std::collections::HashMap;
use std::path::PathBuf;

fn fixture() -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lstm_op.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).expect("fixture lstm_op.safetensors")
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (g, w) = (values(got), values(want));
    let worst = g
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= tol, "{what}: max |diff| {worst:e} > {tol:e}");
}

/// The LSTM with the fixture's parameters as fresh variables.
fn lstm_from(f: &HashMap<String, Tensor>) -> (BiLstm, Vec<(String, Var)>) {
    let mut vars = Vec::new();
    let mut get = |name: &str| {
        let v = Var::from_tensor(&f[&format!("param.{name}")]).unwrap();
        vars.push((name.to_string(), v.clone()));
        v.as_tensor().clone()
    };
    let dir = |s: &str, get: &mut dyn FnMut(&str) -> Tensor| kd_lstm::lstm::Direction {
        weight_ih: get(&format!("weight_ih_l0{s}")),
        weight_hh: get(&format!("weight_hh_l0{s}")),
        bias_ih: get(&format!("bias_ih_l0{s}")),
        bias_hh: get(&format!("bias_hh_l0{s}")),
    };
    let forward = dir("", &mut get);
    let reverse = dir("_reverse", &mut get);
    let (h4, e) = forward.weight_ih.dims2().unwrap();
    let lstm = BiLstm {
        forward,
        reverse,
        input_size: e,
        hidden_size: h4 / 4,
    };
    (lstm, vars)
}

fn lengths(f: &HashMap<String, Tensor>) -> Vec<usize> {
    f["lengths"]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|l| l as usize)
        .collect()
}

#[test]
fn forward_and_every_gradient_match_torch_packed_lstm() {
    let f = fixture();
    let (lstm, vars) = lstm_from(&f);
    let x = Var::from_tensor(&f["x"]).unwrap();
    let out = lstm.forward(x.as_tensor(), &lengths(&f)).unwrap();
    assert_close("output", &out, &f["out"], 1e-5);
    let loss = (&out * &f["probe"]).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    assert_close("grad x", grads.get(&x).unwrap(), &f["grad.x"], 1e-5);
    assert_eq!(vars.len(), 8);
    for (name, v) in &vars {
        let g = grads
            .get(v)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        assert_close(
            &format!("grad {name}"),
            g,
            &f[&format!("grad.{name}")],
            1e-5,
        );
    }
}

#[test]
fn padded_steps_change_nothing() {
    let f = fixture();
    let (lstm, vars) = lstm_from(&f);
    let lens = lengths(&f);
    let (b, t, e) = f["x"].dims3().unwrap();
    // Real steps kept, padded steps replaced by large values of a different pattern each run.
    let run = |fill: f32| {
        let mut x = values(&f["x"]);
        for (row, &len) in lens.iter().enumerate() {
            for s in len..t {
                for j in 0..e {
                    x[(row * t + s) * e + j] = fill * (1.0 + (row * 7 + s * 3 + j) as f32);
                }
            }
        }
        let x = Var::from_tensor(&Tensor::from_vec(x, (b, t, e), &Device::Cpu).unwrap()).unwrap();
        let out = lstm.forward(x.as_tensor(), &lens).unwrap();
        let grads = (&out * &f["probe"])
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let mut all = vec![values(&out), values(grads.get(&x).unwrap())];
        for (_, v) in &vars {
            all.push(values(grads.get(v).unwrap()));
        }
        all
    };
    let (zero, big) = (run(0.0), run(-37.5));
    assert_eq!(zero, big, "padding content changed an output or a gradient");
    // Padded steps output zeros and receive no gradient.
    let (out, dx) = (&zero[0], &zero[1]);
    for (row, &len) in lens.iter().enumerate() {
        for s in len..t {
            let h2 = out.len() / (b * t);
            assert!(out[(row * t + s) * h2..][..h2].iter().all(|&v| v == 0.0));
            assert!(dx[(row * t + s) * e..][..e].iter().all(|&v| v == 0.0));
        }
    }
    // And the output matches torch, whose input held other values at the padding.
    assert!(zero[0]
        .iter()
        .zip(values(&f["out"]))
        .all(|(a, b)| (a - b).abs() <= 1e-5));
}

#[test]
fn the_composed_recurrence_matches_torch_in_f32_and_f64() {
    let f = fixture();
    let lens = lengths(&f);
    for dtype in [DType::F32, DType::F64] {
        let (lstm, _) = lstm_from(&f);
        let x = Var::from_tensor(&f["x"].to_dtype(dtype).unwrap()).unwrap();
        let xw = lstm
            .input_projection(&x.as_tensor().to_dtype(DType::F32).unwrap())
            .unwrap();
        let xw = xw.to_dtype(dtype).unwrap();
        let w = Var::from_tensor(
            &Tensor::stack(&[&lstm.forward.weight_hh, &lstm.reverse.weight_hh], 0)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
        .unwrap();
        let out = kd_lstm::lstm::composed_recurrence(&xw, w.as_tensor(), &lens).unwrap();
        assert_eq!(out.dtype(), dtype);
        let out32 = out.to_dtype(DType::F32).unwrap();
        assert_close(
            &format!("composed output {dtype:?}"),
            &out32,
            &f["out"],
            1e-5,
        );
        let probe = f["probe"].to_dtype(dtype).unwrap();
        let grads = (&out * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let dw = grads.get(&w).unwrap().to_dtype(DType::F32).unwrap();
        let want = Tensor::stack(
            &[&f["grad.weight_hh_l0"], &f["grad.weight_hh_l0_reverse"]],
            0,
        )
        .unwrap();
        assert_close(&format!("composed grad w_hh {dtype:?}"), &dw, &want, 1e-5);
        let dx = grads.get(&x).unwrap().to_dtype(DType::F32).unwrap();
        assert_close(
            &format!("composed grad x {dtype:?}"),
            &dx,
            &f["grad.x"],
            1e-5,
        );
    }
}

#[test]
fn an_f64_lstm_takes_the_composed_path_and_matches_torch() {
    let f = fixture();
    let (lstm, _) = lstm_from(&f);
    let to64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    let dir = |d: &kd_lstm::lstm::Direction| kd_lstm::lstm::Direction {
        weight_ih: to64(&d.weight_ih),
        weight_hh: to64(&d.weight_hh),
        bias_ih: to64(&d.bias_ih),
        bias_hh: to64(&d.bias_hh),
    };
    let wide = BiLstm {
        forward: dir(&lstm.forward),
        reverse: dir(&lstm.reverse),
        ..lstm
    };
    let x = Var::from_tensor(&to64(&f["x"])).unwrap();
    let out = wide.forward(x.as_tensor(), &lengths(&f)).unwrap();
    assert_eq!(out.dtype(), DType::F64);
    assert_close(
        "f64 output",
        &out.to_dtype(DType::F32).unwrap(),
        &f["out"],
        1e-5,
    );
    let grads = (&out * to64(&f["probe"]))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let dx = grads.get(&x).unwrap().to_dtype(DType::F32).unwrap();
    assert_close("f64 grad x", &dx, &f["grad.x"], 1e-5);
}

#[test]
fn inference_without_gradients_gives_the_same_output() {
    let f = fixture();
    let (lstm, _) = lstm_from(&f);
    let out = lstm.forward(&f["x"], &lengths(&f)).unwrap();
    assert_close("output (no graph)", &out, &f["out"], 1e-5);
}

#[test]
fn bad_lengths_and_shapes_are_errors() {
    let f = fixture();
    let (lstm, _) = lstm_from(&f);
    let x = &f["x"];
    for (lens, needle) in [
        (vec![9, 4, 6, 0, 9], "length 0"),
        (vec![9, 4, 6, 10, 9], "length 10"),
        (vec![9, 4], "2 lengths for 5 rows"),
    ] {
        let e = lstm.forward(x, &lens).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
    let zeros = |s: &[usize]| Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap();
    let (w, bias) = (zeros(&[2, 12, 3]), zeros(&[24]));
    let e = kd_lstm::bilstm_recurrence(&zeros(&[5, 8]), &w, &bias, &[1; 5], 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[N, 8H]"), "{e}");
    let e = kd_lstm::bilstm_recurrence(&zeros(&[5, 24]), &w, &bias, &[1, 1, 1, 1, 2], 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("5 packed tokens"), "{e}");
}
