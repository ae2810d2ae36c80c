//! `alexc filters CHECKPOINT -o filters.png`: the first convolution's
//! kernels as an image grid, the paper's Figure 3
//! ([`alexc_train::filters::write_filter_grid`]).

use std::path::PathBuf;

use alexc_train::checkpoint::{first_conv_weight, load_tensors};
use anyhow::{anyhow, Context};

use crate::CliError;

#[derive(Debug, clap::Args)]
pub struct FiltersArgs {
    /// A checkpoint of `alexc train` or any safetensors weights file.
    pub checkpoint: PathBuf,
    /// The PNG to write.
    #[arg(short, long, default_value = "filters.png")]
    pub output: PathBuf,
    /// The tensor to draw [default: conv1.weight, else the first 4-D tensor].
    #[arg(long)]
    pub tensor: Option<String>,
}

pub fn filters(args: &FiltersArgs) -> Result<(), CliError> {
    draw(args)?;
    Ok(())
}

fn draw(args: &FiltersArgs) -> anyhow::Result<()> {
    let weights = load_tensors(&args.checkpoint)?;
    let (name, tensor) = match &args.tensor {
        Some(name) => {
            let t = weights
                .get(name)
                .ok_or_else(|| anyhow!("{} has no tensor `{name}`", args.checkpoint.display()))?;
            (name.as_str(), t)
        }
        None => first_conv_weight(&weights).ok_or_else(|| {
            anyhow!(
                "{} holds no 4-D (convolution) weight to draw",
                args.checkpoint.display()
            )
        })?,
    };
    alexc_train::filters::write_filter_grid(tensor, &args.output)
        .with_context(|| format!("drawing `{name}`"))?;
    println!(
        "wrote {}: the {} filters of `{name}` {:?}",
        args.output.display(),
        tensor.shape().first().copied().unwrap_or(0),
        tensor.shape()
    );
    Ok(())
}
