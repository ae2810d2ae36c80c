//! Tests of the tensor type, `.npy` reading and writing, safetensors weights,
//! weight checking and parameter initialization.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use alexc_ir::{DType, Graph, Init, MomentumAttrs, Op, ParameterAttrs, Shape};
use alexc_tensor::{
    check_weights, expected_parameters, init_parameters, load_weights, read_npy, save_weights,
    write_npy, InitError, NpyError, NpyTensor, Tensor, TensorError, Weights, WeightsError,
};

/// A fresh, empty directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("alexc-tensor")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An `.npy` file image written by hand (format version 1.0), so that the
/// reader is tested against the specification rather than against npyz's
/// own writer.
fn npy_image(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape_str = match shape {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape_str}, }}",
        if fortran { "True" } else { "False" }
    );
    // magic (6) + version (2) + length (2) + dict + padding + '\n' ≡ 0 mod 64
    let unpadded = 10 + dict.len() + 1;
    let padding = (64 - unpadded % 64) % 64;
    let header = format!("{dict}{}\n", " ".repeat(padding));
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

// ---------------------------------------------------------------- tensor

#[test]
fn tensor_checks_length() {
    assert!(Tensor::new(vec![2, 3], vec![0.0f32; 6]).is_ok());
    assert_eq!(
        Tensor::new(vec![2, 3], vec![0.0f32; 5]),
        Err(TensorError::LengthMismatch {
            shape: vec![2, 3],
            expected: 6,
            found: 5
        })
    );
    // A scalar has one element.
    assert!(Tensor::new(Vec::<usize>::new(), vec![1i64]).is_ok());
}

#[test]
fn tensor_refuses_absurd_shapes_without_allocating() {
    let huge = vec![1 << 20, 1 << 20, 1 << 20];
    assert!(matches!(
        Tensor::<f32>::zeros(huge.clone()),
        Err(TensorError::TooLarge { .. })
    ));
    assert!(matches!(
        Tensor::new(huge, Vec::<f32>::new()),
        Err(TensorError::TooLarge { .. })
    ));
    let overflow = vec![usize::MAX, 3];
    assert!(matches!(
        Tensor::<f32>::zeros(overflow),
        Err(TensorError::TooLarge { .. })
    ));
}

#[test]
fn from_fn_visits_row_major() {
    let t = Tensor::from_fn(vec![2, 3], |i| (i[0] * 10 + i[1]) as i64).unwrap();
    assert_eq!(t.data(), &[0, 1, 2, 10, 11, 12]);
    assert_eq!(t.get(&[1, 2]), Some(&12));
    assert_eq!(t.get(&[2, 0]), None);
    assert_eq!(t.get(&[0]), None);
    let f = Tensor::from_flat_fn(vec![3], |i| i as f32 * 0.5).unwrap();
    assert_eq!(f.data(), &[0.0, 0.5, 1.0]);
}

#[test]
fn map_cast_and_reshape() {
    let t = Tensor::new(vec![2, 2], vec![1.0f32, -2.0, 0.1, 1e30]).unwrap();
    let d: Tensor<f64> = t.cast();
    assert_eq!(d.shape(), &[2, 2]);
    assert_eq!(d.data()[2], 0.1f32 as f64);
    let back: Tensor<f32> = d.cast();
    assert_eq!(back, t);
    // f64 beyond f32's range becomes infinity under `as`.
    let big = Tensor::scalar(1e300f64).cast::<f32>();
    assert_eq!(big.data(), &[f32::INFINITY]);
    assert_eq!(t.map(|x| x * 2.0).data(), &[2.0, -4.0, 0.2, 2e30]);
    assert_eq!(t.clone().reshape(vec![4]).unwrap().shape(), &[4]);
    assert!(t.reshape(vec![3]).is_err());
}

// ---------------------------------------------------------------- npy

#[test]
fn npy_f32_round_trip() {
    let dir = scratch("npy_round_trip");
    let t = Tensor::from_flat_fn(vec![2, 3, 4], |i| i as f32 - 3.5).unwrap();
    let path = dir.join("t.npy");
    write_npy(&path, &t).unwrap();
    match read_npy(&path).unwrap() {
        NpyTensor::F32(r) => assert_eq!(r, t),
        other => panic!("read back as {}", other.dtype_name()),
    }
}

#[test]
fn npy_reads_every_supported_dtype() {
    let dir = scratch("npy_dtypes");
    let f64s: Vec<u8> = [1.5f64, -2.25]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let i64s: Vec<u8> = [7i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
    let i32s: Vec<u8> = [3i32, 4].iter().flat_map(|v| v.to_le_bytes()).collect();
    let u8s = [9u8, 255];
    let f32_be: Vec<u8> = [0.5f32, 8.0].iter().flat_map(|v| v.to_be_bytes()).collect();
    let cases: [(&str, &[u8]); 5] = [
        ("<f8", &f64s),
        ("<i8", &i64s),
        ("<i4", &i32s),
        ("|u1", &u8s),
        (">f4", &f32_be),
    ];
    let mut got = Vec::new();
    for (descr, data) in cases {
        let path = dir.join(format!("{}.npy", &descr[1..]));
        write(&path, &npy_image(descr, false, &[2], data));
        got.push(read_npy(&path).unwrap());
    }
    assert_eq!(
        got[0],
        NpyTensor::F64(Tensor::new(vec![2], vec![1.5, -2.25]).unwrap())
    );
    assert_eq!(
        got[1],
        NpyTensor::I64(Tensor::new(vec![2], vec![7, -1]).unwrap())
    );
    assert_eq!(
        got[2],
        NpyTensor::I32(Tensor::new(vec![2], vec![3, 4]).unwrap())
    );
    assert_eq!(
        got[3],
        NpyTensor::U8(Tensor::new(vec![2], vec![9, 255]).unwrap())
    );
    assert_eq!(
        got[4],
        NpyTensor::F32(Tensor::new(vec![2], vec![0.5, 8.0]).unwrap())
    );
    // Conversions.
    assert_eq!(got[0].to_f32().data(), &[1.5, -2.25]);
    assert_eq!(got[3].to_f32().data(), &[9.0, 255.0]);
    let p = Path::new("labels.npy");
    assert_eq!(got[1].to_labels(p).unwrap().data(), &[7, -1]);
    assert_eq!(got[2].to_labels(p).unwrap().data(), &[3, 4]);
    assert_eq!(got[3].to_labels(p).unwrap().data(), &[9, 255]);
    let err = got[0].to_labels(p).unwrap_err();
    assert!(
        matches!(
            err,
            NpyError::NotIntegers {
                dtype: "float64",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn npy_scalar_and_multi_dim_shapes() {
    let dir = scratch("npy_shapes");
    let path = dir.join("scalar.npy");
    write(&path, &npy_image("<f4", false, &[], &2.5f32.to_le_bytes()));
    let t = read_npy(&path).unwrap().to_f32();
    assert_eq!(t.shape(), &[] as &[usize]);
    assert_eq!(t.data(), &[2.5]);

    let data: Vec<u8> = (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect();
    let path = dir.join("m.npy");
    write(&path, &npy_image("<f4", false, &[2, 3], &data));
    let t = read_npy(&path).unwrap().to_f32();
    assert_eq!(t.shape(), &[2, 3]);
    assert_eq!(t.get(&[1, 0]), Some(&3.0));
}

#[test]
fn npy_errors_are_specific() {
    let dir = scratch("npy_errors");
    let data: Vec<u8> = (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect();

    let path = dir.join("half.npy");
    write(&path, &npy_image("<f2", false, &[3], &data[..6]));
    let err = read_npy(&path).unwrap_err();
    assert!(
        matches!(&err, NpyError::UnsupportedDtype { dtype, .. } if dtype.contains("f2")),
        "{err}"
    );
    assert!(err.to_string().contains("half.npy"), "{err}");

    let path = dir.join("fortran.npy");
    write(&path, &npy_image("<f4", true, &[2, 3], &data));
    let err = read_npy(&path).unwrap_err();
    assert!(matches!(err, NpyError::FortranOrder { .. }), "{err}");
    assert!(err.to_string().contains("ascontiguousarray"), "{err}");

    let path = dir.join("truncated.npy");
    write(&path, &npy_image("<f4", false, &[2, 3], &data[..20]));
    let err = read_npy(&path).unwrap_err();
    assert!(
        matches!(
            err,
            NpyError::Truncated {
                expected: 24,
                found: 20,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("24 bytes"), "{err}");

    let path = dir.join("trailing.npy");
    let mut long = data.clone();
    long.extend([0u8; 4]);
    write(&path, &npy_image("<f4", false, &[2, 3], &long));
    assert!(matches!(
        read_npy(&path),
        Err(NpyError::TrailingData { .. })
    ));

    // A header that claims 2^60 elements must be refused, not allocated.
    let path = dir.join("huge.npy");
    write(&path, &npy_image("<f4", false, &[1 << 30, 1 << 30], &data));
    assert!(matches!(read_npy(&path), Err(NpyError::Shape { .. })));

    let path = dir.join("garbage.npy");
    write(&path, b"not an npy file at all");
    assert!(matches!(read_npy(&path), Err(NpyError::Header { .. })));

    let path = dir.join("cut_header.npy");
    write(&path, &npy_image("<f4", false, &[2, 3], &data)[..30]);
    assert!(matches!(read_npy(&path), Err(NpyError::Header { .. })));

    assert!(matches!(
        read_npy(dir.join("absent.npy")),
        Err(NpyError::Io { .. })
    ));
}

// ---------------------------------------------------------------- safetensors

fn sample_weights() -> Weights {
    let mut w = Weights::new();
    w.insert(
        "conv1.weight".into(),
        Tensor::from_flat_fn(vec![2, 1, 3, 3], |i| i as f32).unwrap(),
    );
    w.insert(
        "conv1.bias".into(),
        Tensor::new(vec![2], vec![0.5, -0.5]).unwrap(),
    );
    w.insert("scale".into(), Tensor::scalar(3.0));
    w
}

#[test]
fn safetensors_round_trip_leaves_no_temporary_file() {
    let dir = scratch("st_round_trip");
    let path = dir.join("w.safetensors");
    let w = sample_weights();
    save_weights(&path, &w).unwrap();
    assert_eq!(load_weights(&path).unwrap(), w);
    // Overwriting replaces the file atomically and cleans up.
    let mut w2 = w.clone();
    w2.remove("scale");
    save_weights(&path, &w2).unwrap();
    assert_eq!(load_weights(&path).unwrap(), w2);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["w.safetensors".to_string()]);
}

#[test]
fn safetensors_file_is_standard_format() {
    // The 8-byte little-endian header length, then JSON, then the data.
    let dir = scratch("st_format");
    let path = dir.join("w.safetensors");
    let mut w = Weights::new();
    w.insert("a".into(), Tensor::new(vec![2], vec![1.0, 2.0]).unwrap());
    save_weights(&path, &w).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    assert!(
        header.contains("\"a\"") && header.contains("F32"),
        "{header}"
    );
    let data = &bytes[8 + n..];
    assert_eq!(data, [1.0f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat());
}

#[test]
fn safetensors_rejects_other_dtypes_by_name() {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    let dir = scratch("st_dtype");
    let path = dir.join("w.safetensors");
    let f32s: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let f64s: Vec<u8> = [1.0f64].iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        ("good", TensorView::new(Dtype::F32, vec![2], &f32s).unwrap()),
        (
            "fc.weight",
            TensorView::new(Dtype::F64, vec![1], &f64s).unwrap(),
        ),
    ];
    write(&path, &safetensors::serialize(views, None).unwrap());
    let err = load_weights(&path).unwrap_err();
    assert!(
        matches!(&err, WeightsError::NotF32 { tensor, .. } if tensor == "fc.weight"),
        "{err}"
    );
    assert!(
        err.to_string().contains("fc.weight") && err.to_string().contains("F64"),
        "{err}"
    );
}

#[test]
fn safetensors_rejects_malformed_files() {
    let dir = scratch("st_malformed");
    let path = dir.join("w.safetensors");
    save_weights(&path, &sample_weights()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    write(&path, &bytes[..bytes.len() - 3]);
    assert!(matches!(
        load_weights(&path),
        Err(WeightsError::Format { .. })
    ));
    write(&path, b"garbage");
    assert!(matches!(
        load_weights(&path),
        Err(WeightsError::Format { .. })
    ));
    assert!(matches!(
        load_weights(dir.join("absent")),
        Err(WeightsError::Io { .. })
    ));
}

// ---------------------------------------------------------------- check_weights

#[test]
fn check_weights_lists_every_difference() {
    let expected = vec![
        ("conv1.weight".to_string(), Shape::new(vec![96, 3, 11, 11])),
        ("conv1.bias".to_string(), Shape::new(vec![96])),
        ("fc.weight".to_string(), Shape::new(vec![10, 20])),
    ];
    let mut w: BTreeMap<String, Tensor<f32>> = BTreeMap::new();
    w.insert(
        "conv1.weight".into(),
        Tensor::zeros(vec![96, 3, 5, 5]).unwrap(),
    );
    w.insert("fc.weight".into(), Tensor::zeros(vec![10, 20]).unwrap());
    w.insert("fc9.weight".into(), Tensor::zeros(vec![1, 2]).unwrap());
    let err = check_weights(&expected, &w).unwrap_err();
    assert_eq!(err.len(), 3);
    assert_eq!(
        err.missing,
        vec![("conv1.bias".to_string(), Shape::new(vec![96]))]
    );
    assert_eq!(
        err.unexpected,
        vec![("fc9.weight".to_string(), Shape::new(vec![1, 2]))]
    );
    assert_eq!(err.wrong_shape.len(), 1);
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "the weights do not match the model's parameters (3 differences):"
    );
    assert_eq!(
        lines[1],
        "  conv1.weight: expected [96, 3, 11, 11], found [96, 3, 5, 5]"
    );
    assert_eq!(lines[2], "  conv1.bias: missing (expected [96])");
    assert!(lines[3].starts_with("  fc9.weight: unexpected"), "{text}");
    assert!(lines[4].contains("hint"), "{text}");

    w.remove("fc9.weight");
    w.insert(
        "conv1.weight".into(),
        Tensor::zeros(vec![96, 3, 11, 11]).unwrap(),
    );
    w.insert("conv1.bias".into(), Tensor::zeros(vec![96]).unwrap());
    assert_eq!(check_weights(&expected, &w), Ok(()));
}

// ---------------------------------------------------------------- init

fn param(shape: Vec<usize>, init: Init) -> Op {
    Op::Parameter(ParameterAttrs {
        dtype: DType::F32,
        shape: Shape::new(shape),
        init,
    })
}

#[test]
fn init_is_deterministic_and_independent_of_node_order() {
    let normal = Init::Normal {
        mean: 0.0,
        std: 0.01,
    };
    let mut g1 = Graph::new("a", 1);
    g1.add("w1", param(vec![4, 5], normal.clone()), &[])
        .unwrap();
    g1.add("w2", param(vec![7], normal.clone()), &[]).unwrap();
    let mut g2 = Graph::new("b", 1);
    g2.add("extra", param(vec![3], normal.clone()), &[])
        .unwrap();
    g2.add("w2", param(vec![7], normal.clone()), &[]).unwrap();
    g2.add("w1", param(vec![4, 5], normal), &[]).unwrap();
    let dir = Path::new(".");
    let a = init_parameters(&g1, 42, dir).unwrap();
    let b = init_parameters(&g2, 42, dir).unwrap();
    assert_eq!(a["w1"], b["w1"]);
    assert_eq!(a["w2"], b["w2"]);
    assert_ne!(a["w1"].data()[..5], a["w2"].data()[..5]);
    let c = init_parameters(&g1, 43, dir).unwrap();
    assert_ne!(a["w1"], c["w1"]);
    assert_eq!(init_parameters(&g1, 42, dir).unwrap(), a);
    assert_eq!(
        expected_parameters(&g2),
        vec![
            ("extra".to_string(), Shape::new(vec![3])),
            ("w2".to_string(), Shape::new(vec![7])),
            ("w1".to_string(), Shape::new(vec![4, 5])),
        ]
    );
}

#[test]
fn normal_init_has_the_requested_moments() {
    let mut g = Graph::new("a", 1);
    g.add(
        "w",
        param(
            vec![200, 100],
            Init::Normal {
                mean: 0.5,
                std: 2.0,
            },
        ),
        &[],
    )
    .unwrap();
    g.add("b", param(vec![3], Init::Constant { value: 0.25 }), &[])
        .unwrap();
    let w = init_parameters(&g, 1, Path::new(".")).unwrap();
    let x: Vec<f64> = w["w"].data().iter().map(|&v| v as f64).collect();
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let std = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    // 20 000 samples: the standard error of the mean is 2/√20000 ≈ 0.014.
    assert!((mean - 0.5).abs() < 0.06, "mean {mean}");
    assert!((std - 2.0).abs() < 0.05, "std {std}");
    assert_eq!(w["b"].data(), &[0.25, 0.25, 0.25]);
}

fn momentum(of: &str, dtype: DType, shape: Vec<usize>) -> Op {
    Op::Momentum(MomentumAttrs {
        dtype,
        shape: Shape::new(shape),
        of: of.into(),
    })
}

#[test]
fn momentum_buffers_start_at_zero_and_are_expected_with_the_weights() {
    let mut g = Graph::new("train", 1);
    let normal = Init::Normal {
        mean: 0.0,
        std: 1.0,
    };
    g.add("fc.weight", param(vec![3, 2], normal), &[]).unwrap();
    g.add(
        "fc.weight.momentum",
        momentum("fc.weight", DType::F32, vec![3, 2]),
        &[],
    )
    .unwrap();
    g.add(
        "fc.bias",
        param(vec![3], Init::Constant { value: 1.0 }),
        &[],
    )
    .unwrap();
    g.add(
        "fc.bias.momentum",
        momentum("fc.bias", DType::F32, vec![3]),
        &[],
    )
    .unwrap();
    let w = init_parameters(&g, 5, Path::new(".")).unwrap();
    assert_eq!(w.len(), 4);
    assert_eq!(w["fc.weight.momentum"], Tensor::zeros(vec![3, 2]).unwrap());
    assert_eq!(w["fc.bias.momentum"].data(), &[0.0; 3]);
    assert!(w["fc.weight"].data().iter().any(|&v| v != 0.0));
    // Adding momentum buffers does not change the parameters' values.
    let mut plain = Graph::new("infer", 1);
    plain
        .add(
            "fc.weight",
            param(
                vec![3, 2],
                Init::Normal {
                    mean: 0.0,
                    std: 1.0,
                },
            ),
            &[],
        )
        .unwrap();
    assert_eq!(
        init_parameters(&plain, 5, Path::new(".")).unwrap()["fc.weight"],
        w["fc.weight"]
    );
    // Listed in node order, with the parameters; so the whole state
    // initialized in one call checks, saves and loads as one state dict.
    let expected = expected_parameters(&g);
    assert_eq!(
        expected,
        vec![
            ("fc.weight".to_string(), Shape::new(vec![3, 2])),
            ("fc.weight.momentum".to_string(), Shape::new(vec![3, 2])),
            ("fc.bias".to_string(), Shape::new(vec![3])),
            ("fc.bias.momentum".to_string(), Shape::new(vec![3])),
        ]
    );
    assert_eq!(check_weights(&expected, &w), Ok(()));
    let dir = scratch("momentum_state");
    save_weights(dir.join("state.safetensors"), &w).unwrap();
    assert_eq!(load_weights(dir.join("state.safetensors")).unwrap(), w);

    let mut g = Graph::new("bad", 1);
    g.add(
        "steps.momentum",
        momentum("steps", DType::I64, vec![2]),
        &[],
    )
    .unwrap();
    let err = init_parameters(&g, 0, Path::new(".")).unwrap_err();
    assert!(matches!(err, InitError::DType { .. }), "{err}");
}

#[test]
fn init_rejects_bad_distributions_and_dtypes() {
    let mut g = Graph::new("a", 1);
    g.add(
        "w",
        param(
            vec![2],
            Init::Normal {
                mean: 0.0,
                std: -1.0,
            },
        ),
        &[],
    )
    .unwrap();
    assert!(matches!(
        init_parameters(&g, 0, Path::new(".")),
        Err(InitError::BadNormal { .. })
    ));

    let mut g = Graph::new("a", 1);
    g.add("w", param(vec![2], Init::Constant { value: f64::NAN }), &[])
        .unwrap();
    assert!(matches!(
        init_parameters(&g, 0, Path::new(".")),
        Err(InitError::BadConstant { .. })
    ));

    let mut g = Graph::new("a", 1);
    let op = Op::Parameter(ParameterAttrs {
        dtype: DType::I64,
        shape: Shape::new(vec![2]),
        init: Init::Constant { value: 0.0 },
    });
    g.add("steps", op, &[]).unwrap();
    let err = init_parameters(&g, 0, Path::new(".")).unwrap_err();
    assert!(matches!(err, InitError::DType { .. }), "{err}");
}

#[test]
fn init_from_file() {
    let dir = scratch("init_file");
    save_weights(dir.join("pre.safetensors"), &sample_weights()).unwrap();
    let file = |tensor: Option<&str>| Init::File {
        path: "pre.safetensors".into(),
        tensor: tensor.map(str::to_string),
    };
    let mut g = Graph::new("a", 1);
    g.add("conv1.weight", param(vec![2, 1, 3, 3], file(None)), &[])
        .unwrap();
    g.add("other.bias", param(vec![2], file(Some("conv1.bias"))), &[])
        .unwrap();
    let w = init_parameters(&g, 0, &dir).unwrap();
    assert_eq!(w["conv1.weight"], sample_weights()["conv1.weight"]);
    assert_eq!(w["other.bias"].data(), &[0.5, -0.5]);

    // Wrong shape: both shapes and the file in the message.
    let mut g = Graph::new("a", 1);
    g.add("conv1.weight", param(vec![2, 1, 5, 5], file(None)), &[])
        .unwrap();
    let err = init_parameters(&g, 0, &dir).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, InitError::FileShape { .. }), "{text}");
    assert!(
        text.contains("[2, 1, 5, 5]") && text.contains("[2, 1, 3, 3]"),
        "{text}"
    );
    assert!(text.contains("pre.safetensors"), "{text}");

    // Missing tensor: the available names in the message.
    let mut g = Graph::new("a", 1);
    g.add("conv2.weight", param(vec![2], file(None)), &[])
        .unwrap();
    let err = init_parameters(&g, 0, &dir).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("conv2.weight") && text.contains("`conv1.bias`"),
        "{text}"
    );

    // Missing file.
    let mut g = Graph::new("a", 1);
    let op = param(
        vec![2],
        Init::File {
            path: "absent.safetensors".into(),
            tensor: None,
        },
    );
    g.add("w", op, &[]).unwrap();
    let err = init_parameters(&g, 0, &dir).unwrap_err();
    assert!(
        matches!(
            err,
            InitError::File {
                source: WeightsError::Io { .. },
                ..
            }
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------- round trips

mod round_trips {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn npy_and_safetensors_round_trip(
            shape in prop::collection::vec(1usize..5, 0..4),
            values in prop::collection::vec(any::<f32>(), 64),
        ) {
            let dir = scratch("round_trip_property");
            let t = Tensor::from_flat_fn(shape.clone(), |i| values[i % values.len()]).unwrap();
            let npy = dir.join("t.npy");
            write_npy(&npy, &t).unwrap();
            let back = read_npy(&npy).unwrap().to_f32();
            // Compare bit patterns so that NaNs count as equal.
            prop_assert_eq!(back.shape(), t.shape());
            prop_assert!(back.data().iter().zip(t.data()).all(|(a, b)| a.to_bits() == b.to_bits()));

            let mut w = Weights::new();
            w.insert("t".into(), t.clone());
            let st = dir.join("w.safetensors");
            save_weights(&st, &w).unwrap();
            let back = load_weights(&st).unwrap().remove("t").unwrap();
            prop_assert_eq!(back.shape(), t.shape());
            prop_assert!(back.data().iter().zip(t.data()).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}
