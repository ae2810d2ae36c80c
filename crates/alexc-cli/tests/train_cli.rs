//! `alexc train`, `alexc eval` and `alexc filters` end to end, on a small
//! synthetic IDX data set the test writes (28×28, 10 classes), so the test
//! needs no installed data set: a run directory with every file, a resume
//! that continues the step count, a refusal to overwrite a run, evaluation
//! (centre crop, ten views, ensemble) and the filter grid.

mod common;

use std::path::Path;
use std::process::{Command, Output};

type TestResult = Result<(), Box<dyn std::error::Error>>;

use common::try_alexc as alexc;

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// 10 classes of 28×28 images: class k has a bright 6×6 square at one of
/// ten positions, over a dim background.
fn write_data(dir: &Path, n_train: usize, n_val: usize) -> Result<(), alexc_data::DataError> {
    for (prefix, n) in [("train", n_train), ("t10k", n_val)] {
        let mut images = vec![20u8; n * 28 * 28];
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let k = (i * 3 + i / 10) % 10;
            let (y0, x0) = (2 + (k / 5) * 12, 1 + (k % 5) * 5);
            for y in y0..y0 + 6 {
                for x in x0..x0 + 6 {
                    images[i * 784 + y * 28 + x] = 200 + ((i + x) % 7) as u8 * 5;
                }
            }
            labels.push(k as u8);
        }
        alexc_data::write_idx(
            dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
            &[n, 28, 28],
            &images,
            true,
        )?;
        alexc_data::write_idx(
            dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
            &[n],
            &labels,
            true,
        )?;
    }
    Ok(())
}

#[test]
fn train_resume_eval_and_filters() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    std::fs::create_dir(&data)?;
    write_data(&data, 320, 100)?;
    let run = tmp.path().join("run");
    let (data_s, run_s) = (data.to_string_lossy(), run.to_string_lossy());
    let common = [
        "--data",
        &data_s,
        "--batch",
        "32",
        "--limit-train",
        "256",
        "--limit-val",
        "64",
        "--backend",
        "cranelift",
        "--lr",
        "0.02",
    ];

    // Two epochs of 8 steps.
    let mut args = vec![
        "train",
        "models/alexnet-small.ron",
        "--epochs",
        "2",
        "--out",
        &run_s,
    ];
    args.extend(common);
    let out = alexc(&args)?;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("epoch   2/2") && stdout.contains("top-1 error"),
        "{}",
        text(&out)
    );
    for name in [
        "metrics.csv",
        "metrics.json",
        "steps.csv",
        "loss.png",
        "error.png",
        "filters.png",
        "last.safetensors",
        "checkpoint-epoch-1.safetensors",
        "checkpoint-epoch-2.safetensors",
    ] {
        assert!(
            run.join(name).is_file(),
            "{name} is missing; {}",
            text(&out)
        );
    }
    let csv = std::fs::read_to_string(run.join("metrics.csv"))?;
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(
        csv.lines().nth(2).is_some_and(|l| l.starts_with("2,16,")),
        "{csv}"
    );

    // Starting a new run in the same directory is refused.
    let mut again = vec!["train", "models/alexnet-small.ron", "--out", &run_s];
    again.extend(common);
    let out = alexc(&again)?;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("already holds a run") && text(&out).contains("--resume"),
        "{}",
        text(&out)
    );

    // Resume for a third epoch, stopped at step 20 by --steps.
    let out = alexc(&[
        "train",
        "models/alexnet-small.ron",
        "--resume",
        &run_s,
        "--epochs",
        "3",
        "--steps",
        "20",
        "--backend",
        "cranelift",
    ])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("resumed") && text(&out).contains("stopped after 20 steps"),
        "{}",
        text(&out)
    );
    let steps = std::fs::read_to_string(run.join("steps.csv"))?;
    assert_eq!(steps.lines().count(), 21, "{steps}");

    // Evaluation: centre crop; ten views with an ensemble of two checkpoints.
    let weights = run.join("last.safetensors");
    let w = weights.to_string_lossy();
    let out = alexc(&[
        "eval",
        "models/alexnet-small.ron",
        "--weights",
        &w,
        "--data",
        &data_s,
        "--batch",
        "50",
        "--backend",
        "cranelift",
    ])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(100 images"),
        "{}",
        text(&out)
    );
    let first = run.join("checkpoint-epoch-1.safetensors");
    let out = alexc(&[
        "eval",
        "models/alexnet-small.ron",
        "--weights",
        &w,
        "--ensemble",
        &first.to_string_lossy(),
        "--data",
        &data_s,
        "--batch",
        "20",
        "--limit",
        "40",
        "--ten-crop",
        "--backend",
        "cranelift",
    ])?;
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("ten views") && s.contains("2 models averaged"),
        "{}",
        text(&out)
    );

    // The filter grid of a checkpoint.
    let png = tmp.path().join("f.png");
    let out = alexc(&["filters", &w, "-o", &png.to_string_lossy()])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("32 filters of `conv1.weight`"),
        "{}",
        text(&out)
    );
    let img = image::open(&png)?;
    assert!(img.width() > 20 && img.height() > 20);
    Ok(())
}

#[test]
fn bad_inputs_are_clear_errors() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let missing = tmp.path().join("nope");
    let out = alexc(&[
        "train",
        "models/alexnet-small.ron",
        "--data",
        &missing.to_string_lossy(),
        "--backend",
        "cranelift",
    ])?;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("does not exist") && !text(&out).contains("panicked"),
        "{}",
        text(&out)
    );

    let ckpt = tmp.path().join("missing.safetensors");
    let out = alexc(&["filters", &ckpt.to_string_lossy()])?;
    assert!(!out.status.success());
    assert!(text(&out).contains("missing.safetensors"), "{}", text(&out));

    let out = alexc(&[
        "train",
        "models/alexnet-small.ron",
        "--resume",
        &tmp.path().to_string_lossy(),
    ])?;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("last.safetensors") && !text(&out).contains("panicked"),
        "{}",
        text(&out)
    );
    Ok(())
}

/// Ctrl-C (SIGINT) finishes the step, writes a checkpoint and exits
/// cleanly; the run then resumes from it.
#[cfg(unix)]
#[test]
fn ctrl_c_writes_a_checkpoint_and_exits_cleanly() -> TestResult {
    use std::time::{Duration, Instant};

    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    std::fs::create_dir(&data)?;
    write_data(&data, 64, 32)?;
    let run = tmp.path().join("run");
    // Many tiny epochs: an epoch checkpoint appears quickly, and the run
    // would take minutes if the signal were ignored.
    let data_s = data.to_string_lossy();
    let run_s = run.to_string_lossy();
    let mut child = common::command(&[
        "train",
        "models/alexnet-small.ron",
        "--data",
        &data_s,
        "--batch",
        "32",
        "--epochs",
        "100000",
        "--limit-val",
        "0",
        "--backend",
        "cranelift",
        "--out",
        &run_s,
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()?;
    let start = Instant::now();
    while !run.join("checkpoint-epoch-1.safetensors").exists() {
        if start.elapsed() > Duration::from_secs(60) || child.try_wait()?.is_some() {
            let _ = child.kill();
            return Err(format!(
                "no checkpoint appeared: {}",
                text(&child.wait_with_output()?)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    let out = child.wait_with_output()?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("stopping after this step")
            && text(&out).contains("checkpoint written"),
        "{}",
        text(&out)
    );
    // The checkpoint is complete and resumable.
    let out = alexc(&[
        "train",
        "models/alexnet-small.ron",
        "--resume",
        &run.to_string_lossy(),
        "--epochs",
        "2",
        "--backend",
        "cranelift",
    ])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("resumed"), "{}", text(&out));
    Ok(())
}

/// The default data set, when installed: a few steps on Fashion-MNIST.
#[test]
fn smoke_run_on_fashion_mnist_when_installed() -> TestResult {
    let dir = Path::new(alexc_data::FASHION_MNIST_DIR);
    if !dir.join("train-labels-idx1-ubyte.gz").is_file() {
        eprintln!(
            "SKIPPED: Fashion-MNIST is not installed at {} (apt-get install dataset-fashion-mnist)",
            dir.display()
        );
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join("run");
    let out = alexc(&[
        "train",
        "models/alexnet-small.ron",
        "--epochs",
        "1",
        "--batch",
        "32",
        "--limit-train",
        "640",
        "--limit-val",
        "200",
        "--backend",
        "cranelift",
        "--out",
        &run.to_string_lossy(),
    ])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("epoch   1/1"), "{}", text(&out));
    for name in [
        "metrics.csv",
        "loss.png",
        "error.png",
        "filters.png",
        "last.safetensors",
    ] {
        assert!(
            run.join(name).is_file(),
            "{name} is missing; {}",
            text(&out)
        );
    }
    Ok(())
}
