//! Shared by the tests: AlexNet's plans as the CUDA backend compiles them.

use alexc_kernel::Kernel;
use alexc_runtime::Options;

/// The batch the tests compile AlexNet for (the paper's).
pub const BATCH: usize = 128;

#[allow(dead_code)]
pub fn alexnet(batch: usize) -> alexc_frontend::Model {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/alexnet.ron");
    alexc_frontend::load(&path, batch).expect("models/alexnet.ron loads")
}

/// The kernels of AlexNet's plan (training or inference, fused or not).
#[allow(dead_code)]
pub fn plan(train: bool, no_fuse: bool) -> Vec<Kernel> {
    let options = Options {
        train,
        no_fuse,
        ..Options::default()
    };
    alexc_cuda::plan_kernels(&alexnet(BATCH), &options).expect("the plan lowers")
}

/// The kernel named `name` in `kernels`.
#[allow(dead_code)]
pub fn kernel<'k>(kernels: &'k [Kernel], name: &str) -> &'k Kernel {
    kernels.iter().find(|k| k.name == name).unwrap_or_else(|| {
        let names: Vec<&str> = kernels.iter().map(|k| k.name.as_str()).collect();
        panic!("no kernel `{name}` among {names:?}")
    })
}
