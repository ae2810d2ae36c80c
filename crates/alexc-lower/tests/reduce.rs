//! Softmax, the loss and their gradients against the reference
//! interpreter. The kernels reduce in the reference's order, so the only
//! differences allowed are those of `exp`/`log` and FMA contraction on a
//! backend: the common tolerance (`REL` = 1e-6 relative, `ABS` = 1e-7).

#![allow(clippy::unwrap_used)]

mod common;

use alexc_interp::ops;
use alexc_ir::{Graph, Op, SoftmaxAttrs};
use alexc_kernel::eval::HostBuffer;
use alexc_tensor::Tensor;
use common::*;

const SOFTMAX_CASES: &[(&[usize], usize)] = &[
    (&[4, 10], 1),
    (&[1, 1000], 1),
    (&[3, 17], 1),
    (&[2, 3, 5], 1),
    (&[2, 3, 5], 0),
    (&[2, 3, 7], 2),
    (&[5], 0),
];

#[test]
fn softmax_and_its_gradient_match_the_reference() {
    for (s, &(shape, axis)) in SOFTMAX_CASES.iter().enumerate() {
        let attrs = SoftmaxAttrs { axis };
        let n: usize = shape.iter().product();
        // Large logits: the max subtraction must keep exp finite.
        let xs: Vec<f32> = data(n, s as u64, false).iter().map(|v| v * 60.0).collect();
        let dys = data(n, 100 + s as u64, false);
        let x = tensor(shape, &xs);
        let want = ops::softmax(&x, &attrs).unwrap();
        let want_dx = ops::softmax_backward(&want, &tensor(shape, &dys), &attrs).unwrap();

        let mut g = Graph::new("t", shape[0]);
        let xv = input(&mut g, "x", shape);
        let dyv = input(&mut g, "dy", shape);
        let id = g.add("softmax", Op::Softmax(attrs.clone()), &[xv]).unwrap();
        let bid = g
            .add("softmax_bw", Op::SoftmaxBackward(attrs.clone()), &[xv, dyv])
            .unwrap();
        for o in option_sets() {
            let got = run(&g, id, &[HostBuffer::F32(xs.clone())], &o);
            assert_close(
                f32s(&got[0]),
                want.data(),
                &format!("softmax {shape:?} axis {axis}"),
            );
            let got = run(
                &g,
                bid,
                &[
                    HostBuffer::F32(want.data().to_vec()),
                    HostBuffer::F32(dys.clone()),
                ],
                &o,
            );
            assert_close(
                f32s(&got[0]),
                want_dx.data(),
                &format!("softmax-backward {shape:?} axis {axis}"),
            );
        }
    }
}

#[test]
fn cross_entropy_and_its_gradient_match_the_reference() {
    for (s, &[n, classes]) in [[4usize, 10], [1, 1], [3, 1000], [7, 13]]
        .iter()
        .enumerate()
    {
        let xs: Vec<f32> = data(n * classes, s as u64, false)
            .iter()
            .map(|v| v * 40.0)
            .collect();
        let labels: Vec<i64> = (0..n).map(|i| ((i * 7 + s) % classes) as i64).collect();
        let lt = Tensor::new(vec![n], labels.clone()).unwrap();
        let x = tensor(&[n, classes], &xs);
        let want = ops::softmax_cross_entropy(&x, &lt).unwrap();
        let want_dx = ops::softmax_cross_entropy_backward(&x, &lt).unwrap();

        let mut g = Graph::new("t", n);
        let xv = input(&mut g, "x", &[n, classes]);
        let lv = input_i64(&mut g, "labels", &[n]);
        let id = g.add("loss", Op::SoftmaxCrossEntropy, &[xv, lv]).unwrap();
        let bid = g
            .add("loss_bw", Op::SoftmaxCrossEntropyBackward, &[xv, lv])
            .unwrap();
        for o in option_sets() {
            let operands = [HostBuffer::F32(xs.clone()), HostBuffer::I64(labels.clone())];
            let got = run(&g, id, &operands, &o);
            assert_close(
                f32s(&got[0]),
                want.data(),
                &format!("loss [{n}, {classes}]"),
            );
            let got = run(&g, bid, &operands, &o);
            assert_close(
                f32s(&got[0]),
                want_dx.data(),
                &format!("loss-backward [{n}, {classes}]"),
            );
        }
    }
}

#[test]
fn an_out_of_range_label_makes_the_loss_nan() {
    let mut g = Graph::new("t", 2);
    let xv = input(&mut g, "x", &[2, 3]);
    let lv = input_i64(&mut g, "labels", &[2]);
    let id = g.add("loss", Op::SoftmaxCrossEntropy, &[xv, lv]).unwrap();
    let got = run(
        &g,
        id,
        &[HostBuffer::F32(vec![0.0; 6]), HostBuffer::I64(vec![0, 3])],
        &Default::default(),
    );
    assert!(f32s(&got[0])[0].is_nan());
}
