//! Elementwise lowerings against the reference interpreter, at sizes that
//! are and are not multiples of the vector width. Copies, ReLU and masks
//! are exact; add/mul are exact too (one rounding each, as the reference);
//! the SGD step is compared with the stated tolerance (FMA contraction
//! is allowed to backends).

#![allow(clippy::unwrap_used)]

mod common;

use alexc_interp::ops;
use alexc_ir::{DropoutAttrs, Graph, Op, ReshapeAttrs, SgdAttrs, SgdConvention, Shape, ValueId};
use alexc_kernel::eval::HostBuffer;
use common::*;

const SHAPES: &[&[usize]] = &[
    &[1, 1],
    &[3, 5],
    &[2, 3, 5, 7],
    &[4, 16],
    &[1, 67],
    &[2, 8, 3, 3],
];

fn unary_case(op: Op, shape: &[usize], seed: u64) -> (Graph, alexc_ir::NodeId, Vec<f32>) {
    let mut g = Graph::new("t", shape[0]);
    let x = input(&mut g, "x", shape);
    let id = g.add("op", op, &[x]).unwrap();
    let n = shape.iter().product();
    let mut xs = data(n, seed, true);
    // Special values the masks must handle.
    if n > 3 {
        xs[0] = f32::NAN;
        xs[1] = -0.0;
        xs[2] = 0.0;
    }
    (g, id, xs)
}

#[test]
fn relu_and_copies_match_the_reference() {
    for (s, shape) in SHAPES.iter().enumerate() {
        let d = shape.len();
        let rest: usize = shape[1..].iter().product();
        let ops_: Vec<Op> = vec![
            Op::Relu,
            Op::Dropout(DropoutAttrs { p: 0.5 }),
            Op::Reshape(ReshapeAttrs {
                shape: Shape::new(vec![rest, shape[0]]),
            }),
        ]
        .into_iter()
        .chain((d >= 2).then_some(Op::Flatten))
        .collect();
        for op in ops_ {
            let (g, id, xs) = unary_case(op.clone(), shape, s as u64);
            let x = tensor(shape, &xs);
            let want = match &op {
                Op::Relu => ops::relu(&x),
                Op::Dropout(_) => ops::dropout(&x, None).unwrap(),
                Op::Reshape(a) => ops::reshape(&x, a).unwrap(),
                _ => ops::flatten(&x).unwrap(),
            };
            for o in option_sets() {
                let got = run(&g, id, &[HostBuffer::F32(xs.clone())], &o);
                assert_exact(
                    f32s(&got[0]),
                    want.data(),
                    &format!("{} {shape:?}", op.name()),
                );
            }
        }
    }
}

#[test]
fn binary_ops_match_the_reference() {
    for (s, shape) in SHAPES.iter().enumerate() {
        let n: usize = shape.iter().product();
        for op in [Op::Add, Op::Mul, Op::ReluBackward] {
            let mut g = Graph::new("t", shape[0]);
            let a = input(&mut g, "a", shape);
            let b = input(&mut g, "b", shape);
            let id = g.add("op", op.clone(), &[a, b]).unwrap();
            let mut av = data(n, 2 * s as u64 + 1, true);
            let bv = data(n, 2 * s as u64 + 2, false);
            if n > 2 {
                av[0] = f32::NAN;
                av[1] = 0.0;
            }
            let (at, bt) = (tensor(shape, &av), tensor(shape, &bv));
            let want = match op {
                Op::Add => ops::add(&at, &bt).unwrap(),
                Op::Mul => ops::mul(&at, &bt).unwrap(),
                _ => ops::relu_backward(&at, &bt).unwrap(),
            };
            for o in option_sets() {
                let got = run(
                    &g,
                    id,
                    &[HostBuffer::F32(av.clone()), HostBuffer::F32(bv.clone())],
                    &o,
                );
                assert_exact(
                    f32s(&got[0]),
                    want.data(),
                    &format!("{} {shape:?}", op.name()),
                );
            }
        }
    }
}

fn sgd_graph(shape: &[usize], attrs: SgdAttrs) -> (Graph, alexc_ir::NodeId) {
    let mut g = Graph::new("t", 1);
    let w = input(&mut g, "w", shape);
    let v = input(&mut g, "v", shape);
    let gr = input(&mut g, "g", shape);
    let lr = input(&mut g, "lr", &[]);
    let id = g.add("sgd", Op::SgdUpdate(attrs), &[w, v, gr, lr]).unwrap();
    (g, id)
}

#[test]
fn sgd_update_matches_the_reference_in_both_conventions() {
    for convention in [SgdConvention::Paper, SgdConvention::Pytorch] {
        for (s, shape) in [&[7usize][..], &[16], &[3, 11, 2], &[96, 3, 3, 3]]
            .iter()
            .enumerate()
        {
            let attrs = SgdAttrs {
                momentum: 0.9,
                weight_decay: 5e-4,
                convention,
            };
            let (g, id) = sgd_graph(shape, attrs.clone());
            let n: usize = shape.iter().product();
            let (w, v, gr) = (
                data(n, 10 + s as u64, false),
                data(n, 20 + s as u64, false),
                data(n, 30 + s as u64, false),
            );
            let lr = 0.01f32;
            let want = ops::sgd_update(
                &tensor(shape, &w),
                &tensor(shape, &v),
                &tensor(shape, &gr),
                &tensor(&[], &[lr]),
                &attrs,
            )
            .unwrap();
            for o in option_sets() {
                let got = run(
                    &g,
                    id,
                    &[
                        HostBuffer::F32(w.clone()),
                        HostBuffer::F32(v.clone()),
                        HostBuffer::F32(gr.clone()),
                        HostBuffer::F32(vec![lr]),
                    ],
                    &o,
                );
                assert_close(
                    f32s(&got[0]),
                    want.w.data(),
                    &format!("w {convention} {shape:?}"),
                );
                assert_close(
                    f32s(&got[1]),
                    want.v.data(),
                    &format!("v {convention} {shape:?}"),
                );
            }
        }
    }
}

#[test]
fn sgd_update_is_in_place() {
    let (g, id) = sgd_graph(
        &[5],
        SgdAttrs {
            momentum: 0.9,
            weight_decay: 0.0,
            convention: SgdConvention::Pytorch,
        },
    );
    let kernels = alexc_lower::lower_node(&g, id, &Default::default()).unwrap();
    assert_eq!(kernels.len(), 1);
    use alexc_lower::Arg;
    assert_eq!(
        kernels[0].args,
        vec![
            Arg::Operand(0),
            Arg::Operand(1),
            Arg::Operand(2),
            Arg::Operand(3)
        ]
    );
    let _ = ValueId::new(id, 0);
}

#[test]
fn sgd_update_kernel_ir() {
    for convention in [SgdConvention::Paper, SgdConvention::Pytorch] {
        let (g, id) = sgd_graph(
            &[96, 3, 11, 11],
            SgdAttrs {
                momentum: 0.9,
                weight_decay: 5e-4,
                convention,
            },
        );
        let text: String = alexc_lower::lower_node(&g, id, &Default::default())
            .unwrap()
            .iter()
            .map(|k| {
                format!(
                    "{}\nargs: {:?}\n",
                    alexc_kernel::print::to_text(&k.kernel),
                    k.args
                )
            })
            .collect();
        insta::assert_snapshot!(format!("sgd_update_kernel_ir_{convention}"), text);
    }
}
