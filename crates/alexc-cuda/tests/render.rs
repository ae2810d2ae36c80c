//! The CUDA C of AlexNet's main kernels (batch 128), pinned by snapshots: a
//! fused convolution + ReLU (block-tiled GEMM after its padding launch),
//! the fused LRN + max-pool (one thread per pooled output), and a weight
//! gradient (split-K GEMM, then its deterministic reduction); and the
//! launches of the window gradients (one thread per input element).

mod common;

use alexc_cuda::{render, Mapping};

#[test]
fn conv_relu_forward_is_a_padding_launch_then_a_block_tiled_gemm() {
    let kernels = common::plan(false, false);
    let k = render(common::kernel(&kernels, "conv1+relu1_fwd")).expect("renders");
    let mappings: Vec<Mapping> = k.launches.iter().map(|l| l.mapping).collect();
    assert_eq!(
        mappings,
        [
            Mapping::Flat {
                iterations: 128 * 3 * 228 * 228
            },
            // 128 images × ⌈96 / 64⌉ × ⌈3025 / 64⌉ tiles.
            Mapping::Blocks {
                blocks: 128 * 2 * 48,
                threads: 256
            },
        ]
    );
    assert!(k.source.contains("__shared__ __align__(16) float"));
    assert!(k.source.contains("__syncthreads();"));
    assert!(k.source.contains("const float* __restrict__ b0"));
    insta::assert_snapshot!("conv1_relu1_fwd", k.source);
}

#[test]
fn lrn_max_pool_runs_one_thread_per_pooled_output() {
    let kernels = common::plan(false, false);
    let k = render(common::kernel(&kernels, "norm1+pool1.lrn_max_pool")).expect("renders");
    assert_eq!(
        k.launches.iter().map(|l| l.mapping).collect::<Vec<_>>(),
        [Mapping::Flat {
            iterations: 128 * 96 * 27 * 27
        }]
    );
    // No thread-private buffers: the LRN of every tap is recomputed.
    assert!(!k.source.contains("float b2["), "{}", k.source);
    insta::assert_snapshot!("norm1_pool1_lrn_max_pool", k.source);
}

#[test]
fn window_gradients_run_one_thread_per_input_element() {
    let kernels = common::plan(true, false);
    let unfused = common::plan(true, true);
    let flat = |launches: usize| {
        vec![
            Mapping::Flat {
                iterations: 128 * 96 * 55 * 55
            };
            launches
        ]
    };
    for (kernel, launches) in [
        // LRN values, the pooling gather into the LRN terms, dx.
        (
            common::kernel(&kernels, "norm1+pool1.backward.lrn_max_pool_backward"),
            3,
        ),
        // The LRN terms, dx.
        (common::kernel(&unfused, "norm1.backward.lrn_backward"), 2),
        // The gather.
        (
            common::kernel(&unfused, "pool1.backward.max_pool_backward"),
            1,
        ),
    ] {
        let k = render(kernel).expect("renders");
        let mappings: Vec<Mapping> = k.launches.iter().map(|l| l.mapping).collect();
        assert_eq!(mappings, flat(launches), "{}", kernel.name);
        assert!(k.launches.iter().all(|l| l.shared_bytes == 0));
    }
}

#[test]
fn conv_weight_gradient_splits_the_images_and_reduces_in_order() {
    let kernels = common::plan(true, false);
    let k = render(common::kernel(&kernels, "conv2+relu2.backward_dw")).expect("renders");
    let mappings: Vec<Mapping> = k.launches.iter().map(|l| l.mapping).collect();
    assert!(
        matches!(
            mappings.as_slice(),
            [
                ..,
                Mapping::Blocks { threads: 256, .. },
                Mapping::Flat { .. }
            ]
        ),
        "{mappings:?}"
    );
    insta::assert_snapshot!("conv2_relu2_backward_dw", k.source);
}
