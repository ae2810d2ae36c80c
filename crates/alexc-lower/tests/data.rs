//! Concat and split against the reference interpreter: exact (copies).

#![allow(clippy::unwrap_used)]

mod common;

use alexc_interp::ops;
use alexc_ir::{ConcatAttrs, Graph, Op, SplitAttrs, ValueId};
use alexc_kernel::eval::HostBuffer;
use common::*;

#[test]
fn concat_matches_the_reference() {
    let cases: &[(&[&[usize]], usize)] = &[
        (&[&[2, 3, 5, 5], &[2, 4, 5, 5]], 1),
        (&[&[1, 1, 3, 3], &[1, 2, 3, 3], &[1, 5, 3, 3]], 1),
        (&[&[3, 7], &[2, 7]], 0),
        (&[&[2, 3, 4], &[2, 3, 9]], 2),
        (&[&[4, 17]], 1),
    ];
    for (s, &(shapes, axis)) in cases.iter().enumerate() {
        let mut g = Graph::new("t", shapes[0][0]);
        let vals: Vec<ValueId> = shapes
            .iter()
            .enumerate()
            .map(|(i, sh)| input(&mut g, &format!("x{i}"), sh))
            .collect();
        let id = g
            .add("cat", Op::Concat(ConcatAttrs { axis }), &vals)
            .unwrap();
        let datas: Vec<Vec<f32>> = shapes
            .iter()
            .enumerate()
            .map(|(i, sh)| data(sh.iter().product(), (s * 10 + i) as u64, false))
            .collect();
        let ts: Vec<_> = shapes
            .iter()
            .zip(&datas)
            .map(|(sh, d)| tensor(sh, d))
            .collect();
        let refs: Vec<_> = ts.iter().collect();
        let want = ops::concat(&refs, &ConcatAttrs { axis }).unwrap();
        for o in option_sets() {
            let operands: Vec<HostBuffer> = datas.iter().cloned().map(HostBuffer::F32).collect();
            let got = run(&g, id, &operands, &o);
            assert_exact(
                f32s(&got[0]),
                want.data(),
                &format!("concat {shapes:?} axis {axis}"),
            );
        }
    }
}

#[test]
fn split_matches_the_reference() {
    let cases: &[(&[usize], usize, &[usize])] = &[
        (&[2, 7, 5, 5], 1, &[3, 4]),
        (&[1, 96, 3, 3], 1, &[48, 48]),
        (&[5, 3], 0, &[1, 2, 2]),
        (&[2, 3, 13], 2, &[13]),
        (&[3, 10], 1, &[1, 9]),
    ];
    for (s, &(shape, axis, sizes)) in cases.iter().enumerate() {
        let mut g = Graph::new("t", shape[0]);
        let x = input(&mut g, "x", shape);
        let attrs = SplitAttrs {
            axis,
            sizes: sizes.to_vec(),
        };
        let id = g.add("split", Op::Split(attrs.clone()), &[x]).unwrap();
        let xs = data(shape.iter().product(), s as u64, false);
        let want = ops::split(&tensor(shape, &xs), &attrs).unwrap();
        for o in option_sets() {
            let got = run(&g, id, &[HostBuffer::F32(xs.clone())], &o);
            assert_eq!(got.len(), want.len());
            for (k, (gb, w)) in got.iter().zip(&want).enumerate() {
                assert_exact(f32s(gb), w.data(), &format!("split {shape:?} piece {k}"));
            }
        }
    }
}
